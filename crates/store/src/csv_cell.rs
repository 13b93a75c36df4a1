//! CSV cells safe to open in a spreadsheet: a cell that starts with `=`, `+`, `-`, `@`, a tab
//! or a carriage return is read as a formula by Excel, LibreOffice and Google Sheets (CSV or
//! formula injection), so it is written with a single quote in front, as OWASP advises. The
//! quote shows in the cell; the rest of the text is unchanged. Every CSV that Livora writes
//! (segment members, the audit log) passes its cells through [`neutralise`].

use std::borrow::Cow;

/// The first characters a spreadsheet reads as the start of a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `cell`, with a `'` in front when a spreadsheet would read it as a formula.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_are_quoted_and_the_rest_is_kept() {
        for bad in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(neutralise(bad), format!("'{bad}"), "{bad:?}");
        }
        for good in ["", "ann@example.com", "42", "a=b", "{\"k\":1}", "'=x"] {
            assert_eq!(neutralise(good), good, "{good:?}");
        }
    }
}
