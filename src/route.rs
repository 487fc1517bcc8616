//! [`RouteTemplate`]: a path with one `{id}` segment, as the layers match and render routes.

use std::fmt;

use crate::ImageId;

/// A path template such as `/v2/images/{id}/file`, with exactly one `{id}` segment.
///
/// Only the path is matched, never the query string. The `{id}` segment is taken as it appears
/// on the wire (still percent-encoded), so `%2e%2e` or `%2F` never become a path on disk.
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct RouteTemplate {
    segments: Vec<Segment>,
    except: Vec<String>,
}

#[derive(Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Id,
}

/// A template that is not a path with exactly one `{id}` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTemplate {
    template: String,
}

impl fmt::Display for InvalidTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "route template {:?} must start with '/' and hold exactly one {{id}} segment",
            self.template
        )
    }
}

impl std::error::Error for InvalidTemplate {}

/// What a path is, for a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteMatch {
    /// The path is this route, for a safe id.
    Id(ImageId),
    /// The path is this route, but the id is not safe as a file name.
    UnsafeId,
}

impl RouteTemplate {
    /// Parses a template; the `{id}` segment must stand alone between slashes.
    pub fn new(template: &str) -> Result<Self, InvalidTemplate> {
        let invalid = || InvalidTemplate {
            template: template.to_owned(),
        };
        let rest = template.strip_prefix('/').ok_or_else(invalid)?;
        let segments: Vec<Segment> = rest
            .split('/')
            .map(|s| {
                if s == "{id}" {
                    Segment::Id
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        let ids = segments.iter().filter(|s| **s == Segment::Id).count();
        let stray_brace = segments
            .iter()
            .any(|s| matches!(s, Segment::Literal(l) if l.contains('{') || l.contains('}')));
        if ids != 1 || stray_brace {
            return Err(invalid());
        }
        Ok(RouteTemplate {
            segments,
            except: Vec::new(),
        })
    }

    /// A value of `{id}` that is not an image (Glance v1's `/v1/images/detail`).
    pub fn except(mut self, id: impl Into<String>) -> Self {
        self.except.push(id.into());
        self
    }

    /// Fills the template in with `id`.
    /// `GET` of this route for `id`, with an empty body and no header (the caller adds them).
    pub(crate) fn get_request<B: Default>(&self, id: &ImageId) -> http::Request<B> {
        let mut request = http::Request::new(B::default());
        *request.uri_mut() = self.uri(id);
        request
    }

    /// The route with `id` in its place, as a request's URI.
    pub(crate) fn uri(&self, id: &ImageId) -> http::Uri {
        http::Uri::try_from(self.render(id)).expect("a rendered route is a valid URI")
    }

    /// The route with `id` in its place.
    pub fn render(&self, id: &ImageId) -> String {
        let length = self
            .segments
            .iter()
            .map(|segment| {
                1 + match segment {
                    Segment::Literal(literal) => literal.len(),
                    Segment::Id => id.as_str().len(),
                }
            })
            .sum();
        let mut path = String::with_capacity(length);
        for segment in &self.segments {
            path.push('/');
            match segment {
                Segment::Literal(literal) => path.push_str(literal),
                Segment::Id => path.push_str(id.as_str()),
            }
        }
        path
    }

    pub(crate) fn matches(&self, path: &str) -> Option<RouteMatch> {
        let rest = path.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let mut id = None;
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Id => id = Some(part),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        let id = id?;
        if self.except.iter().any(|e| e == id) {
            return None;
        }
        Some(match ImageId::new(id) {
            Ok(id) => RouteMatch::Id(id),
            Err(_) => RouteMatch::UnsafeId,
        })
    }
}

impl fmt::Debug for RouteTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path: String = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(literal) => format!("/{literal}"),
                Segment::Id => "/{id}".to_owned(),
            })
            .collect();
        f.debug_struct("RouteTemplate")
            .field("path", &path)
            .field("except", &self.except)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ImageId {
        ImageId::new(s).unwrap()
    }

    #[test]
    fn templates_need_exactly_one_id_segment() {
        assert!(RouteTemplate::new("/images/{id}/data").is_ok());
        for bad in ["images/{id}", "/images", "/{id}/{id}", "/images/x{id}"] {
            assert!(RouteTemplate::new(bad).is_err(), "{bad}");
        }
        let t = RouteTemplate::new("/images/{id}/data").unwrap();
        assert_eq!(t.render(&id("x")), "/images/x/data");
        assert_eq!(t.matches("/images/x/data"), Some(RouteMatch::Id(id("x"))));
    }
}
