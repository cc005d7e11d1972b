//! The twelve action types and their configurable weights.

use serde::{Deserialize, Serialize};

/// A user action, in the fixed order used for count arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Impression,
    Click,
    View,
    Play,
    Read,
    Learn,
    Like,
    Share,
    Comment,
    AddCart,
    Order,
    Payment,
}

/// All actions, index = `Action as usize`.
pub const ACTIONS: [Action; 12] = [
    Action::Impression,
    Action::Click,
    Action::View,
    Action::Play,
    Action::Read,
    Action::Learn,
    Action::Like,
    Action::Share,
    Action::Comment,
    Action::AddCart,
    Action::Order,
    Action::Payment,
];

impl Action {
    /// The wire name (`add_cart`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Action::Impression => "impression",
            Action::Click => "click",
            Action::View => "view",
            Action::Play => "play",
            Action::Read => "read",
            Action::Learn => "learn",
            Action::Like => "like",
            Action::Share => "share",
            Action::Comment => "comment",
            Action::AddCart => "add_cart",
            Action::Order => "order",
            Action::Payment => "payment",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Action> {
        ACTIONS.iter().copied().find(|a| a.name() == s)
    }

    /// Position in count arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// view and play count as "watch" events.
    pub const fn is_watch(self) -> bool {
        matches!(self, Action::View | Action::Play)
    }
}

/// Integer weight per action (config `[weights]`); defaults from MISSION.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionWeights {
    pub impression: u32,
    pub click: u32,
    pub view: u32,
    pub play: u32,
    pub read: u32,
    pub learn: u32,
    pub like: u32,
    pub share: u32,
    pub comment: u32,
    pub add_cart: u32,
    pub order: u32,
    pub payment: u32,
}

impl Default for ActionWeights {
    fn default() -> Self {
        ActionWeights {
            impression: 0,
            click: 2,
            view: 1,
            play: 1,
            read: 1,
            learn: 1,
            like: 3,
            share: 5,
            comment: 4,
            add_cart: 6,
            order: 8,
            payment: 10,
        }
    }
}

impl ActionWeights {
    /// Weights as an array indexed by `Action::index`.
    pub fn to_array(&self) -> [u32; 12] {
        [
            self.impression,
            self.click,
            self.view,
            self.play,
            self.read,
            self.learn,
            self.like,
            self.share,
            self.comment,
            self.add_cart,
            self.order,
            self.payment,
        ]
    }
}
