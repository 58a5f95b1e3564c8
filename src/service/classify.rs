//! Thread-name rules: which phase a thread without an explicit hint is in,
//! by the prefix of its name. PyTorch names the threads that matter, so
//! these rules classify an unmodified training job.

use std::path::Path;

use anyhow::{Context, Result, bail};
use scx_phase::Phase;

/// Thread names are cut to 15 bytes by the kernel.
pub const MAX_PREFIX: usize = 15;

/// One rule: names starting with `prefix` are in `phase`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub prefix: String,
    pub phase: Phase,
}

/// The built-in table: PyTorch's DataLoader workers and pin-memory thread,
/// and its autograd device threads.
pub fn builtin() -> Vec<Rule> {
    [
        ("pt_data_worker", Phase::DataLoading),
        ("pt_multiprocess", Phase::DataLoading),
        ("pt_thread_data", Phase::DataLoading),
        ("pt_data_pin", Phase::DataLoading),
        ("pt_autograd_", Phase::Backward),
    ]
    .into_iter()
    .map(|(prefix, phase)| Rule {
        prefix: prefix.into(),
        phase,
    })
    .collect()
}

/// Parse a rules file: one `PREFIX PHASE` per line; `#` starts a comment.
pub fn parse(text: &str) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let mut words = line.split_whitespace();
        let (Some(prefix), Some(phase), None) = (words.next(), words.next(), words.next()) else {
            bail!("line {n}: expected 'PREFIX PHASE', got '{line}'");
        };
        if prefix.len() > MAX_PREFIX {
            bail!("line {n}: prefix '{prefix}' is longer than a thread name ({MAX_PREFIX} bytes)");
        }
        let phase = phase
            .parse::<Phase>()
            .map_err(|e| anyhow::anyhow!("line {n}: {e}"))?;
        rules.push(Rule {
            prefix: prefix.into(),
            phase,
        });
    }
    let max = scx_phase::bpf_intf::scx_phase_limits_SCX_PHASE_MAX_RULES as usize;
    if rules.len() > max {
        bail!("{} rules: at most {max} are supported", rules.len());
    }
    Ok(rules)
}

/// The name rules in force, and whom they may raise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameRules {
    pub rules: Vec<Rule>,
    /// A name may raise any thread (`--trust-names`, for single-tenant
    /// nodes). Otherwise only threads whose process may raise: CAP_SYS_NICE
    /// on the host, or registered with the hint service and granted the
    /// phase (the BPF side, `name_may_set()`).
    pub trusted: bool,
}

impl NameRules {
    /// For the start-up line: how many rules, and whom they may raise.
    pub fn describe(&self) -> String {
        let n = self.rules.len();
        if self.trusted {
            format!("{n} name rule(s), trusted for every thread (--trust-names)")
        } else {
            format!("{n} name rule(s), raising only threads whose process may raise")
        }
    }
}

/// The rules in force: none with `--no-classify`, the file's with
/// `--classify-rules`, else the built-in table.
pub fn load(file: Option<&Path>, disabled: bool, trusted: bool) -> Result<NameRules> {
    let rules = if disabled {
        Vec::new()
    } else {
        match file {
            None => builtin(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                parse(&text).with_context(|| format!("in {}", path.display()))?
            }
        }
    };
    Ok(NameRules { rules, trusted })
}

/// Fill a BPF skeleton's `classify_*` read-only globals with `rules` (a
/// [`NameRules`]). A
/// macro because both BPF objects (scheduler, hint service) have them, each
/// skeleton with its own Rust types.
#[macro_export]
macro_rules! write_rules {
    ($rodata:expr, $rules:expr) => {{
        let rodata = $rodata;
        let named: &$crate::service::classify::NameRules = $rules;
        let rules = &named.rules;
        rodata.classify_enabled = !rules.is_empty();
        rodata.classify_trusted = named.trusted;
        let slots = rodata.classify_rules.len();
        rodata.nr_classify_rules = rules.len().min(slots) as u32;
        for (slot, rule) in rodata.classify_rules.iter_mut().zip(rules) {
            slot.prefix = [0; 16];
            for (d, s) in slot.prefix.iter_mut().zip(rule.prefix.bytes()) {
                *d = s as _;
            }
            slot.len = rule.prefix.len() as u32;
            slot.phase = rule.phase as u32;
        }
    }};
}

/// The phase the first matching rule gives `comm`: the BPF side's logic,
/// for testing the tables.
#[cfg(test)]
pub fn classify(rules: &[Rule], comm: &str) -> Option<Phase> {
    let name = &comm.as_bytes()[..comm.len().min(MAX_PREFIX)];
    rules
        .iter()
        .find(|r| name.starts_with(r.prefix.as_bytes()))
        .map(|r| r.phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_match_pytorch_thread_names() {
        let r = builtin();
        assert_eq!(classify(&r, "pt_data_worker"), Some(Phase::DataLoading));
        assert_eq!(classify(&r, "pt_multiprocess"), Some(Phase::DataLoading));
        assert_eq!(classify(&r, "pt_data_pin"), Some(Phase::DataLoading));
        assert_eq!(classify(&r, "pt_autograd_0"), Some(Phase::Backward));
        assert_eq!(classify(&r, "pt_autograd_15"), Some(Phase::Backward));
        assert_eq!(classify(&r, "python3"), None);
        assert_eq!(classify(&r, "pt_autograd"), None, "prefix is pt_autograd_");
    }

    #[test]
    fn a_rules_file_parses_with_comments() {
        let r = parse("# mine\nloader_  data_loading\n\nckpt 5 # writer\n").unwrap();
        assert_eq!(
            r,
            vec![
                Rule {
                    prefix: "loader_".into(),
                    phase: Phase::DataLoading
                },
                Rule {
                    prefix: "ckpt".into(),
                    phase: Phase::Checkpoint
                },
            ]
        );
    }

    #[test]
    fn bad_rules_name_their_line() {
        let e = parse("ok idle\nbad\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("x warp").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("unknown phase"), "{e}");
        let e = parse("a_prefix_that_is_too_long idle")
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than a thread name"), "{e}");
        let many: String = (0..40).map(|i| format!("p{i} idle\n")).collect();
        assert!(parse(&many).unwrap_err().to_string().contains("at most 32"));
    }

    #[test]
    fn no_classify_means_no_rules() {
        assert!(load(None, true, false).unwrap().rules.is_empty());
        assert_eq!(load(None, false, false).unwrap().rules, builtin());
        assert!(!load(None, false, false).unwrap().trusted);
        assert!(load(None, false, true).unwrap().trusted);
    }
}
