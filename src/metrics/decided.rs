//! [`Decided`]: how a download's access check was decided, the label of
//! `image_cache_authorization_decisions_total`.

/// How the access check of a download was decided (`authorization_decisions_total`'s
/// `decision` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decided {
    /// The image API was asked.
    Asked,
    /// A decision remembered within `authorization_cache_time`.
    Remembered,
    /// A remembered decision past its time, while the image API could not answer
    /// (`authorization_stale_if_error`).
    Stale,
    /// The image API could not answer, and nothing remembered could stand in.
    Unavailable,
}

impl Decided {
    /// Every decision, in the order of their discriminants.
    pub(super) const ALL: [Decided; 4] = [
        Decided::Asked,
        Decided::Remembered,
        Decided::Stale,
        Decided::Unavailable,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Decided::Asked => "asked",
            Decided::Remembered => "remembered",
            Decided::Stale => "stale",
            Decided::Unavailable => "unavailable",
        }
    }
}
