//! Which requests the cache looks at: route templates with one `{id}` segment.

use std::fmt;

use http::Method;

use crate::ImageId;

/// A path template such as `/v2/images/{id}/file`, with exactly one `{id}` segment.
///
/// Only the path is matched, never the query string. The `{id}` segment is taken as it appears
/// on the wire (still percent-encoded), so `%2e%2e` or `%2F` never become a path on disk.
#[derive(Clone, PartialEq, Eq)]
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
    pub fn render(&self, id: &ImageId) -> String {
        let mut path = String::new();
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

/// The routes the cache acts on.
///
/// The default: downloads `GET /v2/images/{id}/file` and `GET /v1/images/{id}` (not `detail`);
/// evictions on a 2xx answer to `DELETE /v2/images/{id}`, `DELETE /v1/images/{id}` and
/// `PUT /v2/images/{id}/file`; the access check's metadata route `GET /v2/images/{id}`.
#[derive(Debug, Clone)]
pub struct Routes {
    downloads: Vec<RouteTemplate>,
    evictions: Vec<(Method, RouteTemplate)>,
}

impl Default for Routes {
    fn default() -> Self {
        let t = |s: &str| RouteTemplate::new(s).expect("built-in templates are valid");
        Routes {
            downloads: vec![
                t("/v2/images/{id}/file"),
                t("/v1/images/{id}").except("detail"),
            ],
            evictions: vec![
                (Method::DELETE, t("/v2/images/{id}")),
                (Method::DELETE, t("/v1/images/{id}").except("detail")),
                (Method::PUT, t("/v2/images/{id}/file")),
            ],
        }
    }
}

/// What the cache does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// A download (GET or HEAD) of a cacheable route.
    Download(ImageId),
    /// A download route whose id is unsafe on disk: passed through uncached.
    UnsafeDownload,
    /// A request that, when answered 2xx, removes the image from the cache.
    Evict(ImageId),
    /// Anything else.
    PassThrough,
}

impl Routes {
    /// No routes at all; add them with [`download`](Self::download) and
    /// [`evict_on`](Self::evict_on).
    pub fn empty() -> Self {
        Routes {
            downloads: Vec::new(),
            evictions: Vec::new(),
        }
    }

    /// Adds a download route (answered for `GET` and `HEAD`).
    pub fn download(mut self, template: RouteTemplate) -> Self {
        self.downloads.push(template);
        self
    }

    /// Adds an eviction route: a 2xx answer to `method` on `template` removes the image.
    pub fn evict_on(mut self, method: Method, template: RouteTemplate) -> Self {
        self.evictions.push((method, template));
        self
    }

    pub(crate) fn classify(&self, method: &Method, path: &str) -> Action {
        if method == Method::GET || method == Method::HEAD {
            for template in &self.downloads {
                match template.matches(path) {
                    Some(RouteMatch::Id(id)) => return Action::Download(id),
                    Some(RouteMatch::UnsafeId) => return Action::UnsafeDownload,
                    None => {}
                }
            }
        }
        for (evict_method, template) in &self.evictions {
            if evict_method == method {
                if let Some(RouteMatch::Id(id)) = template.matches(path) {
                    return Action::Evict(id);
                }
            }
        }
        Action::PassThrough
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ImageId {
        ImageId::new(s).unwrap()
    }

    #[test]
    fn default_routes_are_glance_v2_and_v1() {
        let routes = Routes::default();
        assert_eq!(
            routes.classify(&Method::GET, "/v2/images/abc/file"),
            Action::Download(id("abc"))
        );
        assert_eq!(
            routes.classify(&Method::HEAD, "/v2/images/abc/file"),
            Action::Download(id("abc"))
        );
        assert_eq!(
            routes.classify(&Method::GET, "/v1/images/abc"),
            Action::Download(id("abc"))
        );
        assert_eq!(
            routes.classify(&Method::GET, "/v1/images/detail"),
            Action::PassThrough
        );
        assert_eq!(
            routes.classify(&Method::GET, "/v2/images/abc"),
            Action::PassThrough
        );
        assert_eq!(
            routes.classify(&Method::POST, "/v2/images/abc/file"),
            Action::PassThrough
        );
        assert_eq!(
            routes.classify(&Method::DELETE, "/v2/images/abc"),
            Action::Evict(id("abc"))
        );
        assert_eq!(
            routes.classify(&Method::DELETE, "/v1/images/abc"),
            Action::Evict(id("abc"))
        );
        assert_eq!(
            routes.classify(&Method::PUT, "/v2/images/abc/file"),
            Action::Evict(id("abc"))
        );
        assert_eq!(
            routes.classify(&Method::GET, "/v2/images/abc/file/"),
            Action::PassThrough
        );
        assert_eq!(
            routes.classify(&Method::GET, "/v2/images/abc/file/x"),
            Action::PassThrough
        );
    }

    #[test]
    fn unsafe_ids_are_recognised_but_never_become_ids() {
        let routes = Routes::default();
        for path in [
            "/v2/images/%2e%2e/file",
            "/v2/images/a%2Fb/file",
            "/v2/images/../file",
            "/v2/images//file",
        ] {
            assert_eq!(
                routes.classify(&Method::GET, path),
                Action::UnsafeDownload,
                "{path}"
            );
        }
        let long = format!("/v2/images/{}/file", "a".repeat(300));
        assert_eq!(routes.classify(&Method::GET, &long), Action::UnsafeDownload);
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
