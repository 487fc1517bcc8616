//! Glance's configuration files as oslo.config reads them: its INI dialect (`:` or `=`, values
//! taken as written: no backslash escapes, no inline comments, one pair of surrounding quotes
//! removed, indented lines continuing a value) and its `$name` / `${name}` substitution.

use std::collections::HashMap;
use std::path::Path;

use super::error::ConfigError;

/// One `key = value` of a file, in the order written.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    pub(crate) section: String,
    pub(crate) key: String,
    pub(crate) value: String,
}

/// Parses `text` (the file `file`) as oslo.config's `iniparser` does; an error names the line.
pub(crate) fn parse(file: &Path, text: &str) -> Result<Vec<Assignment>, ConfigError> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    // The assignment being read: continuation lines join it with '\n'.
    let mut open: Option<(String, Vec<String>)> = None;
    let bad = |number: usize, line: &str, reason: &str| {
        ConfigError::in_file(file, format!("line {number} ({line:?}): {reason}"))
    };
    let flush = |open: &mut Option<(String, Vec<String>)>,
                 section: &Option<String>,
                 out: &mut Vec<Assignment>| {
        if let Some((key, lines)) = open.take() {
            out.push(Assignment {
                section: section.clone().unwrap_or_default(),
                key,
                value: lines.join("\n"),
            });
        }
    };
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim_end();
        if line.is_empty() {
            flush(&mut open, &section, &mut out);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match &mut open {
                Some((_, lines)) => lines.push(line.trim_start().to_owned()),
                None => {
                    return Err(bad(
                        number,
                        line,
                        "an indented line continues a value, but no option comes before it",
                    ))
                }
            }
            continue;
        }
        flush(&mut open, &section, &mut out);
        if line.starts_with('[') {
            if !line.ends_with(']') {
                return Err(bad(number, line, "a section header must end with ']'"));
            }
            if line.len() <= 2 {
                return Err(bad(number, line, "the section has no name"));
            }
            section = Some(line[1..line.len() - 1].to_owned());
        } else if line.starts_with(['#', ';']) {
            // A comment (only at the start of a line: `a = b # c` has the value `b # c`).
        } else {
            let (colon, equal) = (line.find(':'), line.find('='));
            let at = match (colon, equal) {
                (None, None) => {
                    return Err(bad(
                        number,
                        line,
                        "no ':' or '=' in this line: write option = value",
                    ))
                }
                (Some(c), Some(e)) => c.min(e),
                (Some(at), None) | (None, Some(at)) => at,
            };
            let key = line[..at].trim();
            if key.is_empty() {
                return Err(bad(number, line, "the option has no name"));
            }
            if section.is_none() {
                return Err(bad(
                    number,
                    line,
                    "this option comes before any section: put it under [DEFAULT]",
                ));
            }
            let mut value = line[at + 1..].trim();
            let quoted = value.len() >= 2
                && (value.starts_with('"') || value.starts_with('\''))
                && value.ends_with(&value[..1]);
            if quoted {
                value = &value[1..value.len() - 1];
            }
            open = Some((key.to_owned(), vec![value.to_owned()]));
        }
    }
    flush(&mut open, &section, &mut out);
    Ok(out)
}

/// What `$name` may refer to: the options of the section being read, then `[DEFAULT]`'s
/// (oslo.config's lookup: the option's group, then the global options); `$group.name` names
/// another section.
pub(crate) struct Scope<'a> {
    pub(crate) sections: &'a HashMap<String, HashMap<String, String>>,
}

impl Scope<'_> {
    fn lookup(&self, section: &str, name: &str) -> Option<(String, String)> {
        let find = |section: &str, key: &str| {
            self.sections
                .get(section)
                .and_then(|options| options.get(key))
                .map(|value| (section.to_owned(), value.clone()))
        };
        if let Some(found) = find(section, name).or_else(|| find("DEFAULT", name)) {
            return Some(found);
        }
        let (group, option) = name.split_once('.')?;
        find(group, option)
    }

    /// `value` of an option in `section` with every `$name` and `${name}` replaced (`$$` and
    /// `\$` are a `$`; a `$` before anything else stays); an unknown name is the error's reason.
    pub(crate) fn substitute(
        &self,
        section: &str,
        value: &str,
    ) -> Result<String, SubstitutionError> {
        self.substitute_within(section, value, 0)
    }

    fn substitute_within(
        &self,
        section: &str,
        value: &str,
        depth: usize,
    ) -> Result<String, SubstitutionError> {
        if depth > 16 {
            return Err(SubstitutionError::Loop);
        }
        let value = value.replace("\\$", "$$");
        let mut out = String::with_capacity(value.len());
        let mut rest = value.as_str();
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let (name, tail) = match after.strip_prefix('{') {
                Some(braced) => match braced.find('}') {
                    Some(end) if is_name(&braced[..end]) => (&braced[..end], &braced[end + 1..]),
                    _ => ("", after),
                },
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                        .unwrap_or(after.len());
                    let name = &after[..end];
                    if is_name(name) {
                        (name, &after[name.len()..])
                    } else {
                        ("", after)
                    }
                }
            };
            if name.is_empty() {
                out.push('$');
                rest = after;
                continue;
            }
            let Some((found_in, referenced)) = self.lookup(section, name) else {
                return Err(SubstitutionError::Unknown {
                    name: name.to_owned(),
                    section: section.to_owned(),
                });
            };
            out.push_str(&self.substitute_within(&found_in, &referenced, depth + 1)?);
            rest = tail;
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Why a value's `$name` substitutions could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubstitutionError {
    /// The substitutions refer to each other in a loop.
    Loop,
    /// `$name` names no option of the section or of `[DEFAULT]`.
    Unknown { name: String, section: String },
}

impl std::fmt::Display for SubstitutionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubstitutionError::Loop => {
                f.write_str("its substitutions refer to each other in a loop")
            }
            SubstitutionError::Unknown { name, section } => write!(
                f,
                "${name} is not an option of [{section}] or [DEFAULT] (write $$ for a literal $)"
            ),
        }
    }
}

/// oslo.config's (Python `string.Template`'s) names: a letter or `_`, then letters, digits, `_`
/// and `.`.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<(String, String, String)> {
        parse(Path::new("f.conf"), text)
            .unwrap()
            .into_iter()
            .map(|a| (a.section, a.key, a.value))
            .collect()
    }

    #[test]
    fn values_are_taken_as_written() {
        let got = read(
            "# comment\n[DEFAULT]\na = b # not a comment\nc: d\\e\\\\f\nq = \"quoted\"\n\
             long = first\n  second\n\tthird\n; comment\n[x]\ny=\n",
        );
        let want = [
            ("DEFAULT", "a", "b # not a comment"),
            ("DEFAULT", "c", "d\\e\\\\f"),
            ("DEFAULT", "q", "quoted"),
            ("DEFAULT", "long", "first\nsecond\nthird"),
            ("x", "y", ""),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(s, k, v)| (s.to_string(), k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse(Path::new("f.conf"), "[DEFAULT\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.to_string().contains("must end with ']'"), "{err}");
        let err = parse(Path::new("f.conf"), "[DEFAULT]\njust words\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse(Path::new("f.conf"), "  indented\n").unwrap_err();
        assert!(err.to_string().contains("continues a value"), "{err}");
        assert!(!err.to_string().contains("Some("), "{err}");
    }

    #[test]
    fn substitution_follows_oslo_config() {
        let mut sections = HashMap::new();
        sections.insert(
            "DEFAULT".to_owned(),
            HashMap::from([
                ("state_path".to_owned(), "/var/lib/glance".to_owned()),
                ("nested".to_owned(), "$state_path/n".to_owned()),
            ]),
        );
        sections.insert(
            "db".to_owned(),
            HashMap::from([("host".to_owned(), "db1".to_owned())]),
        );
        let scope = Scope {
            sections: &sections,
        };
        let sub = |v: &str| scope.substitute("DEFAULT", v);
        assert_eq!(sub("$state_path/cache").unwrap(), "/var/lib/glance/cache");
        assert_eq!(sub("${state_path}x").unwrap(), "/var/lib/glancex");
        assert_eq!(sub("$nested").unwrap(), "/var/lib/glance/n");
        assert_eq!(sub("$db.host:5432").unwrap(), "db1:5432");
        assert_eq!(sub("a$$b \\$c $ 5").unwrap(), "a$b $c $ 5");
        assert_eq!(
            scope.substitute("db", "$host/$state_path").unwrap(),
            "db1//var/lib/glance"
        );
        let err = sub("$nope/x").unwrap_err().to_string();
        assert!(err.contains("$nope is not an option"), "{err}");
    }
}
