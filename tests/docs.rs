//! The README quotes only measured figures: each figure of its "Measured"
//! section must be in docs/measurements.md, which scripts/measurements.py
//! generates from a run of the suite and the benchmarks' reports.

use std::fs;
use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of a Markdown section, from its `## ` heading to the next.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| l.trim() != heading)
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect()
}

/// The figures in a line: a number with one decimal point (so no version
/// like 7.3.4), or a number followed by x, × or %, as the text writes it.
fn figures(line: &str) -> Vec<String> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let start = i;
        let mut dots = 0;
        while i < b.len()
            && (b[i].is_ascii_digit()
                || (b[i] == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()))
        {
            dots += usize::from(b[i] == b'.');
            i += 1;
        }
        let number = &line[start..i];
        let rest = &line[i..];
        let unit = rest.starts_with('x') || rest.starts_with('×') || rest.starts_with('%');
        if dots == 1 || (dots == 0 && unit) {
            out.push(number.to_string());
        }
    }
    out
}

/// Whether `number` stands alone in `text`: not part of a longer number.
fn holds(text: &str, number: &str) -> bool {
    text.match_indices(number).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + number.len()..].chars().next();
        let digit_or_point = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == '.');
        let sentence_ends = text[at + number.len()..].starts_with(". ");
        !digit_or_point(before) && (!digit_or_point(after) || sentence_ends)
    })
}

#[test]
fn figures_are_found_as_written() {
    assert_eq!(
        figures("2.87x shorter, 2.42-2.98x, 100.0% on node"),
        ["2.87", "2.42", "2.98", "100.0"]
    );
    assert_eq!(
        figures("Debian 7.3.4 on 16 vCPUs, 80% of 100 ms, 10,240 tasks"),
        ["80"]
    );
    assert!(holds("p50 1.42x, 2.87x.", "2.87"));
    assert!(!holds("p50 12.87x", "2.87"));
    assert!(!holds("p50 2.875", "2.87"));
}

#[test]
fn the_readme_quotes_only_figures_docs_measurements_md_holds() {
    let readme = read("README.md");
    let measured = section(&readme, "## Measured");
    assert!(
        !measured.is_empty(),
        "README.md has no \"## Measured\" section"
    );
    let measurements = read("docs/measurements.md");
    let mut quoted = 0;
    let missing: Vec<String> = measured
        .iter()
        .flat_map(|l| figures(l))
        .inspect(|_| quoted += 1)
        .filter(|f| !holds(&measurements, f))
        .collect();
    assert!(quoted > 0, "the README's Measured section quotes no figure");
    assert!(
        missing.is_empty(),
        "README.md quotes {missing:?}, which docs/measurements.md does not hold: quote that file's figures, or regenerate it (scripts/measurements.py)"
    );
}
