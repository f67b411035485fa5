//! The kinds of owner write (the fenced store operations) the cluster simulation records, pauses
//! at and strips fences from; shared by the store wrapper ([`crate::fence`]) and the engine
//! controls ([`crate::control`]).

/// A kind of owner write (the fenced store operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Checkpoint,
    ClaimActivities,
    ClaimReminders,
    FireReminder,
    Purge,
}

impl Op {
    pub const ALL: [Op; 5] = [
        Op::Checkpoint,
        Op::ClaimActivities,
        Op::ClaimReminders,
        Op::FireReminder,
        Op::Purge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Checkpoint => "checkpoint",
            Op::ClaimActivities => "claim_activities",
            Op::ClaimReminders => "claim_due_reminders",
            Op::FireReminder => "fire_reminder",
            Op::Purge => "purge",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == s)
    }
}
