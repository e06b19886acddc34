//! Reading the proxy's `/metrics` page (Prometheus / OpenMetrics text) back into numbers.
//!
//! Only what tests need: every sample line as name, labels and value. Comments (`# HELP`,
//! `# TYPE`, `# EOF`) are skipped.

use std::fmt;

/// One sample line, e.g. `remora_requests_total{listener="main",status_class="2xx"} 7`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every `(name, value)` in `want` is one of this sample's labels.
    pub fn has_labels(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// All samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the text format. Panics on a line it cannot read, naming the line: a test should
    /// fail loudly if the proxy's output is malformed.
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).unwrap_or_else(|e| panic!("bad metrics line {l:?}: {e}")))
            .collect();
        Metrics { samples }
    }

    /// The value of the sample named `name` whose labels are exactly `labels` (in any order).
    /// `None` if there is no such sample.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.len() == labels.len() && s.has_labels(labels))
            .map(|s| s.value)
    }

    /// The sum over samples named `name` that carry at least the given labels (0 if none do).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Samples named `name` that carry at least the given labels.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.has_labels(labels))
    }
}

#[derive(Debug)]
struct ParseError(&'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

fn parse_line(line: &str) -> Result<Sample, ParseError> {
    let name_end = line
        .find(['{', ' '])
        .ok_or(ParseError("no value after the name"))?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or(ParseError("no value"))?;
    let value = value
        .parse::<f64>()
        .map_err(|_| ParseError("value is not a number"))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

type Labels = Vec<(String, String)>;

/// `a="1",b="x\"y"} rest` -> labels and `rest`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), ParseError> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or(ParseError("label without '='"))?;
        let key = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(ParseError("label value is not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => return Err(ParseError("dangling escape")),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or(ParseError("unterminated label value"))?;
        labels.push((key, value));
        s = &s[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP remora_requests HTTP requests
# TYPE remora_requests counter
remora_requests_total{listener="main",route="",status_class="4xx"} 3
remora_requests_total{listener="main",route="api",status_class="2xx"} 7
remora_request_duration_seconds_bucket{listener="main",route="a\"b",le="+Inf"} 7
remora_downstream_connections_open{listener="main",direction="inbound"} 1
remora_up 1.5
# EOF
"#;

    #[test]
    fn samples_are_found_by_exact_labels() {
        let m = Metrics::parse(TEXT);
        let get = |route, class| {
            m.get(
                "remora_requests_total",
                &[
                    ("status_class", class),
                    ("listener", "main"),
                    ("route", route),
                ],
            )
        };
        assert_eq!(get("api", "2xx"), Some(7.0));
        assert_eq!(get("", "4xx"), Some(3.0));
        assert_eq!(get("api", "5xx"), None);
        assert_eq!(m.get("remora_up", &[]), Some(1.5));
    }

    #[test]
    fn partial_labels_sum_and_escapes_are_read() {
        let m = Metrics::parse(TEXT);
        assert_eq!(
            m.sum("remora_requests_total", &[("listener", "main")]),
            10.0
        );
        let bucket = m
            .matching("remora_request_duration_seconds_bucket", &[])
            .next()
            .unwrap();
        assert_eq!(bucket.label("route"), Some("a\"b"));
        assert_eq!(bucket.label("le"), Some("+Inf"));
    }
}
