//! Training phases: the numbering shared with the BPF side and the names
//! people type.

use std::fmt;
use std::str::FromStr;

/// A training phase. The discriminants are the hint ABI (`src/bpf/intf.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Phase {
    Idle = 0,
    DataLoading = 1,
    Forward = 2,
    Backward = 3,
    Optimizer = 4,
    Checkpoint = 5,
}

impl Phase {
    /// Every phase, in ABI order.
    pub const ALL: [Phase; 6] = [
        Phase::Idle,
        Phase::DataLoading,
        Phase::Forward,
        Phase::Backward,
        Phase::Optimizer,
        Phase::Checkpoint,
    ];

    /// The canonical name, as accepted by [`Phase::from_str`].
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::DataLoading => "data_loading",
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Optimizer => "optimizer",
            Phase::Checkpoint => "checkpoint",
        }
    }

    /// The phase with ABI number `n`, if there is one.
    pub fn from_number(n: u32) -> Option<Phase> {
        Phase::ALL.get(usize::try_from(n).ok()?).copied()
    }

    /// The canonical names, comma-separated, for error messages.
    pub fn valid_names() -> String {
        let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
        names.join(", ")
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A phase name or number that is not one of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPhase(pub String);

impl fmt::Display for UnknownPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown phase '{}' (valid: {}, or 0-5)",
            self.0,
            Phase::valid_names()
        )
    }
}

impl std::error::Error for UnknownPhase {}

impl FromStr for Phase {
    type Err = UnknownPhase;

    /// Accepts a name in any case, with `-` or `_` ("data-loading"), or a
    /// number 0-5.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(n) = t.parse::<u32>() {
            return Phase::from_number(n).ok_or_else(|| UnknownPhase(s.to_string()));
        }
        let norm = t.to_ascii_lowercase().replace('-', "_");
        Phase::ALL
            .iter()
            .copied()
            .find(|p| p.name() == norm)
            .ok_or_else(|| UnknownPhase(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_abi_order() {
        let got: Vec<(u32, &str)> = Phase::ALL.iter().map(|p| (*p as u32, p.name())).collect();
        assert_eq!(
            got,
            vec![
                (0, "idle"),
                (1, "data_loading"),
                (2, "forward"),
                (3, "backward"),
                (4, "optimizer"),
                (5, "checkpoint"),
            ]
        );
    }

    #[test]
    fn names_and_numbers_parse() {
        for p in Phase::ALL {
            assert_eq!(p.name().parse::<Phase>(), Ok(p));
            assert_eq!((p as u32).to_string().parse::<Phase>(), Ok(p));
            assert_eq!(p.name().to_uppercase().parse::<Phase>(), Ok(p));
        }
        assert_eq!("data-loading".parse::<Phase>(), Ok(Phase::DataLoading));
    }

    #[test]
    fn unknown_phases_are_rejected_with_the_valid_names() {
        for bad in ["6", "99", "-1", "", "backwards", "fwd"] {
            let err = bad.parse::<Phase>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("'{bad}'")), "{msg}");
            assert!(msg.contains("data_loading, forward, backward"), "{msg}");
        }
    }

    #[test]
    fn from_number_stops_at_checkpoint() {
        assert_eq!(Phase::from_number(5), Some(Phase::Checkpoint));
        assert_eq!(Phase::from_number(6), None);
        assert_eq!(Phase::from_number(u32::MAX), None);
    }
}
