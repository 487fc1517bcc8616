//! [`Token`]: what Keystone says of a token (who, which project, which roles, until when, and
//! the catalog).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::secret::Secret;

/// A token and what Keystone said of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Token {
    /// The token itself (`X-Subject-Token`).
    pub id: Secret,
    /// When it stops being accepted.
    pub expires_at: SystemTime,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// Its user's id.
    pub user_id: String,
    /// Its user's name.
    pub user_name: String,
    /// The project it is scoped to, if any.
    pub project_id: Option<String>,
    /// That project's name.
    pub project_name: Option<String>,
    /// Its role names in that project.
    pub roles: Vec<String>,
    /// The service catalog (empty when asked for without one).
    pub catalog: Vec<Endpoint>,
}

/// One endpoint of the service catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The service type (`image`, `identity`, ...).
    pub service_type: String,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// The region, if the endpoint has one.
    pub region: Option<String>,
    /// The URL.
    pub url: String,
}

/// Why a token document could not be read.
#[derive(Debug)]
pub(crate) enum TokenDocumentError {
    /// Not the JSON of a token.
    Json(serde_json::Error),
    /// A time in it is not in Keystone's format.
    Time(String),
}

impl std::fmt::Display for TokenDocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenDocumentError::Json(err) => err.fmt(f),
            TokenDocumentError::Time(text) => write!(f, "{text:?} is not a time Keystone sends"),
        }
    }
}

impl Token {
    /// Parses Keystone's `{"token": {...}}` answer for the token `id`.
    pub(crate) fn parse(id: Secret, body: &[u8]) -> Result<Token, TokenDocumentError> {
        let wire: Wire = serde_json::from_slice(body).map_err(TokenDocumentError::Json)?;
        let token = wire.token;
        let time =
            |text: &str| parse_time(text).ok_or_else(|| TokenDocumentError::Time(text.to_owned()));
        let catalog = token
            .catalog
            .into_iter()
            .flat_map(|service| {
                let service_type = service.kind;
                service.endpoints.into_iter().map(move |e| Endpoint {
                    service_type: service_type.clone(),
                    interface: e.interface,
                    region: e.region_id.or(e.region),
                    url: e.url,
                })
            })
            .collect();
        Ok(Token {
            id,
            expires_at: time(&token.expires_at)?,
            issued_at: time(&token.issued_at)?,
            user_id: token.user.id,
            user_name: token.user.name,
            project_id: token.project.as_ref().map(|p| p.id.clone()),
            project_name: token.project.map(|p| p.name),
            roles: token.roles.into_iter().map(|r| r.name).collect(),
            catalog,
        })
    }

    /// Whether the token should be replaced at `now`: once less than a quarter of its life
    /// (at most five minutes) is left, so a request sent with it does not outlive it.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        let life = self
            .expires_at
            .duration_since(self.issued_at)
            .unwrap_or_default();
        let margin = (life / 4).min(Duration::from_secs(300));
        match self.expires_at.duration_since(now) {
            Ok(left) => left <= margin,
            Err(_) => true,
        }
    }

    /// Whether the token carries `role` (compared without case, as Keystone's policies do).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }
}

#[derive(Deserialize)]
struct Wire {
    token: WireToken,
}

#[derive(Deserialize)]
struct WireToken {
    expires_at: String,
    issued_at: String,
    user: WireNamed,
    project: Option<WireNamed>,
    #[serde(default)]
    roles: Vec<WireNamed>,
    #[serde(default)]
    catalog: Vec<WireService>,
}

#[derive(Deserialize)]
struct WireNamed {
    #[serde(default)]
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct WireService {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<WireEndpoint>,
}

#[derive(Deserialize)]
struct WireEndpoint {
    interface: String,
    region: Option<String>,
    region_id: Option<String>,
    url: String,
}

/// Keystone's UTC times: `2026-11-30T17:05:09.000000Z` (the fraction and the `Z` optional).
fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':').map(str::parse::<u64>);
    let (hour, minute, second) = (
        clock.next()?.ok()?,
        clock.next()?.ok()?,
        clock.next()?.ok()?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().take(9).collect();
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystone_times_parse() {
        let at = |s| parse_time(s).unwrap().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(at("1970-01-01T00:00:00Z"), Duration::ZERO);
        assert_eq!(at("2000-03-01T00:00:00.000000Z").as_secs(), 951_868_800);
        assert_eq!(
            at("2026-11-30T17:05:09.250000Z"),
            Duration::new(1_796_058_309, 250_000_000)
        );
        for bad in ["", "2026-13-01T00:00:00Z", "yesterday", "2026-11-30"] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_token_is_renewed_in_the_last_quarter_of_its_life() {
        let issued = UNIX_EPOCH + Duration::from_secs(1000);
        let token = Token {
            id: "t".into(),
            issued_at: issued,
            expires_at: issued + Duration::from_secs(60),
            user_id: String::new(),
            user_name: String::new(),
            project_id: None,
            project_name: None,
            roles: vec!["Admin".into()],
            catalog: Vec::new(),
        };
        assert!(!token.needs_renewal(issued + Duration::from_secs(44)));
        assert!(token.needs_renewal(issued + Duration::from_secs(45)));
        assert!(token.needs_renewal(issued + Duration::from_secs(90)));
        assert!(token.has_role("admin"));
    }
}
