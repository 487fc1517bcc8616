//! Which requests the cache looks at: [`Routes`], the download and eviction routes.

use http::Method;

use crate::route::{RouteMatch, RouteTemplate};
use crate::ImageId;

/// The routes the cache acts on.
///
/// The default: downloads `GET /v2/images/{id}/file` and `GET /v1/images/{id}` (not `detail`);
/// evictions on a 2xx answer to `DELETE /v2/images/{id}`, `DELETE /v1/images/{id}` and
/// `PUT /v2/images/{id}/file`; the access check's metadata route `GET /v2/images/{id}`; and the
/// changes of who may download an image, which void the access decisions remembered for it
/// (`POST /v2/images/{id}/actions/deactivate`, `PATCH /v2/images/{id}`, `POST` and `DELETE` of
/// `/v2/images/{id}/members`).
#[derive(Debug, Clone)]
#[must_use]
pub struct Routes {
    downloads: Vec<RouteTemplate>,
    evictions: Vec<(Method, RouteTemplate)>,
    changes: Vec<(Method, RouteTemplate)>,
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
            changes: vec![
                (Method::POST, t("/v2/images/{id}/actions/deactivate")),
                (Method::PATCH, t("/v2/images/{id}")),
                (Method::POST, t("/v2/images/{id}/members")),
                (Method::PUT, t("/v2/images/{id}/members")),
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
    /// A request that, when answered 2xx, may change who may download the image: the access
    /// decisions remembered for it are voided.
    Change(ImageId),
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
            changes: Vec::new(),
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

    /// Adds a route whose 2xx answer to `method` may change who may download the image (its
    /// remembered access decisions are voided).
    pub fn change_on(mut self, method: Method, template: RouteTemplate) -> Self {
        self.changes.push((method, template));
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
        // A member's change (`PUT`, `DELETE` of `/v2/images/{id}/members/{member}`) counts as
        // one of the image's members list.
        let members = match path.rsplit_once("/members/") {
            Some((image, member))
                if !member.is_empty()
                    && !member.contains('/')
                    && (method == Method::PUT || method == Method::DELETE) =>
            {
                Some(format!("{image}/members"))
            }
            _ => None,
        };
        for (change_method, template) in &self.changes {
            let target = match &members {
                Some(members) => members.as_str(),
                None if change_method == method => path,
                None => continue,
            };
            if let Some(RouteMatch::Id(id)) = template.matches(target) {
                return Action::Change(id);
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
        let cases = [
            (
                Method::GET,
                "/v2/images/abc/file",
                Action::Download(id("abc")),
            ),
            (
                Method::HEAD,
                "/v2/images/abc/file",
                Action::Download(id("abc")),
            ),
            (Method::GET, "/v1/images/abc", Action::Download(id("abc"))),
            (Method::GET, "/v1/images/detail", Action::PassThrough),
            (Method::GET, "/v2/images/abc", Action::PassThrough),
            (Method::POST, "/v2/images/abc/file", Action::PassThrough),
            (Method::DELETE, "/v2/images/abc", Action::Evict(id("abc"))),
            (Method::DELETE, "/v1/images/abc", Action::Evict(id("abc"))),
            (Method::PUT, "/v2/images/abc/file", Action::Evict(id("abc"))),
            (
                Method::POST,
                "/v2/images/abc/actions/deactivate",
                Action::Change(id("abc")),
            ),
            (Method::PATCH, "/v2/images/abc", Action::Change(id("abc"))),
            (
                Method::DELETE,
                "/v2/images/abc/members/p2",
                Action::Change(id("abc")),
            ),
            (
                Method::PUT,
                "/v2/images/abc/members/p2",
                Action::Change(id("abc")),
            ),
            (
                Method::GET,
                "/v2/images/abc/members/p2",
                Action::PassThrough,
            ),
            (Method::GET, "/v2/images/abc/file/", Action::PassThrough),
            (Method::GET, "/v2/images/abc/file/x", Action::PassThrough),
        ];
        for (method, path, action) in cases {
            assert_eq!(routes.classify(&method, path), action, "{method} {path}");
        }
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
}
