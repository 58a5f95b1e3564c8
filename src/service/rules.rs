//! The rules, as the kernel would apply them:
//! - a client may hint a thread only if it could send it a signal (its
//!   own process; the same real or effective uid as the thread's real or
//!   saved uid; or CAP_KILL or CAP_SYS_NICE over it), and only in its own
//!   PID namespace or below;
//! - raising a thread above un-hinted work (every phase but idle) is a
//!   privilege, like a negative nice: CAP_SYS_NICE, or membership in
//!   `--hint-group`. Anyone may lower the threads they may signal to idle.
//!
//! Each refusal is one line that names the rule.

use scx_phase::Phase;
use scx_phase::bpf_intf::{
    scx_phase_hint_limits_SCX_PHASE_ALLOW_ALL as ALLOW_ALL,
    scx_phase_hint_limits_SCX_PHASE_ALLOW_IDLE as ALLOW_IDLE,
};

use super::identity::{CAP_KILL, CAP_SYS_NICE, Peer, Target};

/// What the admin decided (`--hint-group`).
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub hint_group: Option<(String, u32)>,
}

/// The facts about a client the rules look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub pid: u32,
    pub uid: u32,
    pub ruid: u32,
    pub in_group: bool,
    pub cap_kill: bool,
    pub cap_sys_nice: bool,
}

impl Who {
    pub fn of(peer: &Peer, policy: &Policy) -> Who {
        Who {
            pid: peer.pid,
            uid: peer.uid,
            ruid: peer.status.uids[0],
            in_group: policy
                .hint_group
                .as_ref()
                .is_some_and(|(_, gid)| peer.in_group(*gid)),
            cap_kill: peer.capable(CAP_KILL),
            cap_sys_nice: peer.capable(CAP_SYS_NICE),
        }
    }
}

/// The facts about a target thread the rules look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Whom {
    /// Its id in the client's PID namespace.
    pub tid: u32,
    pub tgid: u32,
    pub ruid: u32,
    pub suid: u32,
    /// Whether the client's capabilities reach it (same user namespace).
    pub caps_reach: bool,
}

impl Whom {
    pub fn of(t: &Target, peer: &Peer) -> Whom {
        Whom {
            // As the client numbers it, for its messages.
            tid: t
                .status
                .nspid
                .get(peer.status.depth())
                .copied()
                .unwrap_or(t.tid),
            tgid: t.status.tgid,
            ruid: t.status.uids[0],
            suid: t.status.uids[2],
            caps_reach: peer.our_userns || t.userns == Some(peer.userns),
        }
    }
}

fn group_text(policy: &Policy) -> String {
    match &policy.hint_group {
        Some((name, gid)) => format!("membership in the hint group '{name}' (gid {gid})"),
        None => "a hint group (scx_phase --hint-group; none is set)".into(),
    }
}

/// Whether `who` may raise threads above un-hinted work.
pub fn may_raise(who: &Who) -> bool {
    who.cap_sys_nice || who.in_group
}

/// The phases `who` may set (a bit per phase), and that grant in words.
pub fn grant(who: &Who, policy: &Policy) -> (u32, String) {
    if may_raise(who) {
        let why = if who.in_group {
            "member of the hint group"
        } else {
            "CAP_SYS_NICE"
        };
        (
            ALLOW_ALL,
            format!("uid {} may set every phase ({why})", who.uid),
        )
    } else {
        (
            ALLOW_IDLE,
            format!(
                "uid {} may set idle only: raising a thread above un-hinted work needs CAP_SYS_NICE or {}",
                who.uid,
                group_text(policy)
            ),
        )
    }
}

/// kill(2)'s rule: may `who` signal `whom`?
pub fn may_signal(who: &Who, whom: &Whom) -> Result<(), String> {
    let same_uid = [who.uid, who.ruid]
        .iter()
        .any(|u| *u == whom.ruid || *u == whom.suid);
    if whom.tgid == who.pid || same_uid || (whom.caps_reach && (who.cap_kill || who.cap_sys_nice)) {
        return Ok(());
    }
    Err(format!(
        "refused: uid {} may not hint thread {} of uid {}: a hint needs what kill(2) needs (the same uid, or CAP_KILL or CAP_SYS_NICE)",
        who.uid, whom.tid, whom.ruid
    ))
}

/// May `who` claim CPUs? A claim puts its threads ahead of others on
/// those CPUs, which is raising.
pub fn may_claim(who: &Who, policy: &Policy) -> Result<(), String> {
    if may_raise(who) {
        return Ok(());
    }
    Err(format!(
        "refused: claiming CPUs needs CAP_SYS_NICE or {}; uid {} has neither",
        group_text(policy),
        who.uid
    ))
}

/// May `who` set `phase` on `whom` (a one-shot hint)?
pub fn may_set(who: &Who, whom: &Whom, phase: Phase, policy: &Policy) -> Result<(), String> {
    may_signal(who, whom)?;
    if phase != Phase::Idle && !may_raise(who) {
        return Err(format!(
            "refused: setting {phase} raises thread {} above un-hinted work, which needs CAP_SYS_NICE or {}; anyone may set idle",
            whom.tid,
            group_text(policy)
        ));
    }
    Ok(())
}

/// May `who` remove `whom`'s one-shot hint, which is `current`? Removing
/// an idle hint raises the thread back, so it needs the raising right.
pub fn may_clear(
    who: &Who,
    whom: &Whom,
    current: Option<Phase>,
    policy: &Policy,
) -> Result<(), String> {
    may_signal(who, whom)?;
    if current == Some(Phase::Idle) && !may_raise(who) {
        return Err(format!(
            "refused: clearing thread {}'s idle hint raises it back above idle, which needs CAP_SYS_NICE or {}",
            whom.tid,
            group_text(policy)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32) -> Who {
        Who {
            pid: 100,
            uid,
            ruid: uid,
            in_group: false,
            cap_kill: false,
            cap_sys_nice: false,
        }
    }

    fn whom(uid: u32) -> Whom {
        Whom {
            tid: 200,
            tgid: 200,
            ruid: uid,
            suid: uid,
            caps_reach: true,
        }
    }

    fn policy() -> Policy {
        Policy {
            hint_group: Some(("train".into(), 4242)),
        }
    }

    #[test]
    fn signal_rule_follows_kill() {
        assert!(may_signal(&who(1000), &whom(1000)).is_ok());
        let err = may_signal(&who(1000), &whom(0)).unwrap_err();
        assert!(err.contains("kill(2)") && err.contains("uid 0"), "{err}");
        // Its own process, whatever the thread's uid.
        let mut own = whom(0);
        own.tgid = 100;
        assert!(may_signal(&who(1000), &own).is_ok());
        // A saved uid matches too.
        let mut setuid = whom(0);
        setuid.suid = 1000;
        assert!(may_signal(&who(1000), &setuid).is_ok());
        // CAP_KILL reaches only where its user namespace does.
        let mut killer = who(1000);
        killer.cap_kill = true;
        assert!(may_signal(&killer, &whom(0)).is_ok());
        let mut far = whom(0);
        far.caps_reach = false;
        assert!(may_signal(&killer, &far).is_err());
    }

    #[test]
    fn raising_needs_the_group_or_cap_sys_nice() {
        let p = policy();
        let plain = who(1000);
        assert!(may_set(&plain, &whom(1000), Phase::Idle, &p).is_ok());
        let err = may_set(&plain, &whom(1000), Phase::Backward, &p).unwrap_err();
        assert!(err.contains("'train'") && err.contains("backward"), "{err}");
        let mut member = who(1000);
        member.in_group = true;
        assert!(may_set(&member, &whom(1000), Phase::Checkpoint, &p).is_ok());
        // The group does not lift the signal rule.
        assert!(may_set(&member, &whom(0), Phase::Checkpoint, &p).is_err());
        let mut nice = who(1000);
        nice.cap_sys_nice = true;
        assert!(may_set(&nice, &whom(1000), Phase::Forward, &p).is_ok());
        // Root without CAP_SYS_NICE (a container's root) is not privileged.
        assert!(may_set(&who(0), &whom(0), Phase::Forward, &p).is_err());
        assert!(
            may_set(&who(0), &whom(0), Phase::Forward, &Policy::default())
                .unwrap_err()
                .contains("none is set")
        );
    }

    #[test]
    fn grants_are_all_or_idle() {
        let p = policy();
        assert_eq!(grant(&who(1000), &p).0, ALLOW_IDLE);
        let mut member = who(1000);
        member.in_group = true;
        assert_eq!(grant(&member, &p).0, ALLOW_ALL);
        assert_eq!(ALLOW_IDLE, 1 << Phase::Idle as u32);
        assert_eq!(ALLOW_ALL, (1 << Phase::ALL.len()) - 1);
    }

    #[test]
    fn clearing_an_idle_hint_is_raising() {
        let p = policy();
        assert!(may_clear(&who(1000), &whom(1000), Some(Phase::Backward), &p).is_ok());
        assert!(may_clear(&who(1000), &whom(1000), None, &p).is_ok());
        assert!(may_clear(&who(1000), &whom(1000), Some(Phase::Idle), &p).is_err());
    }
}
