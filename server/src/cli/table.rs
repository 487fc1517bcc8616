//! Tables drawn as Glance's tools draw them (prettytable): a border, and each column's header
//! and cells centred unless the column is aligned right.

/// A table of text cells.
#[derive(Debug, Clone)]
#[must_use]
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Aligns a column's cells to the right (numbers).
    pub fn align_right(mut self, header: &str) -> Self {
        if let Some(i) = self.headers.iter().position(|h| h == header) {
            self.right[i] = true;
        }
        self
    }

    /// Adds a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table as lines of text.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                let cells = self.rows.iter().map(|r| r[i].chars().count());
                cells
                    .chain([self.headers[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let border: String = widths
            .iter()
            .map(|w| format!("+{}", "-".repeat(w + 2)))
            .collect::<String>()
            + "+";
        let line = |cells: &[String], right: &dyn Fn(usize) -> bool| -> String {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                let (left, right_pad) = if right(i) {
                    (pad, 0)
                } else {
                    (pad / 2, pad - pad / 2)
                };
                out.push_str(&format!(
                    "| {}{}{} ",
                    " ".repeat(left),
                    cell,
                    " ".repeat(right_pad)
                ));
            }
            out + "|"
        };
        let right = |i: usize| self.right[i];
        let mut out = vec![border.clone(), line(&self.headers, &right), border.clone()];
        for row in &self.rows {
            out.push(line(row, &right));
        }
        out.push(border);
        out.join("\n")
    }
}

/// Glance's rendering of an epoch time: ISO 8601 in UTC without a zone, `N/A` for 0.
pub fn utc_time(epoch: f64) -> String {
    if epoch <= 0.0 || !epoch.is_finite() {
        return "N/A".into();
    }
    // Rounded to the microsecond as Python's datetime.fromtimestamp does: the fraction alone,
    // half to even.
    let (seconds, fraction) = (epoch.trunc(), epoch.fract());
    let micros = seconds as u64 * 1_000_000 + (fraction * 1e6).round_ties_even() as u64;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    let text = if time
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|d| d.subsec_micros() == 0)
    {
        humantime::format_rfc3339_seconds(time).to_string()
    } else {
        humantime::format_rfc3339_micros(time).to_string()
    };
    text.trim_end_matches('Z').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_like_prettytable() {
        let mut table = Table::new(&["ID", "Size"]).align_right("Size");
        table.row(vec!["abc".into(), "5".into()]);
        table.row(vec!["a".into(), "100000".into()]);
        assert_eq!(
            table.render(),
            "+-----+--------+\n| ID  |   Size |\n+-----+--------+\n| abc |      5 |\n|  a  | 100000 |\n+-----+--------+"
        );
    }

    #[test]
    fn times_read_as_glance_prints_them() {
        assert_eq!(utc_time(0.0), "N/A");
        assert_eq!(utc_time(1_795_471_464.0), "2026-11-23T22:04:24");
        assert_eq!(
            utc_time(1_795_471_464.081_558),
            "2026-11-23T22:04:24.081558"
        );
    }
}
