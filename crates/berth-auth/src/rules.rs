//! Access rules: which users, groups or anonymous callers may pull, push or
//! delete in which repositories. The actions of all matching rules add up.

use std::collections::BTreeMap;

use berth_types::pattern::RepoPattern;
use berth_types::RepoName;

use crate::{AccessConfig, Actions, AuthError, Identity};

#[derive(Debug, Clone)]
struct Rule {
    patterns: Vec<RepoPattern>,
    users: Vec<String>,
    groups: Vec<String>,
    anonymous: bool,
    authenticated: bool,
    actions: Actions,
}

#[derive(Debug, Clone)]
pub struct Rules {
    groups: BTreeMap<String, Vec<String>>,
    rules: Vec<Rule>,
    admins: Vec<String>,
}

impl Rules {
    pub fn new(cfg: &AccessConfig) -> Result<Self, AuthError> {
        let mut rules = Vec::new();
        for (i, r) in cfg.rules.iter().enumerate() {
            let mut patterns = Vec::new();
            for p in &r.repositories {
                let p = RepoPattern::parse(p)
                    .map_err(|e| AuthError::Config(format!("auth.access.rules[{i}].repositories: {e}")))?;
                patterns.push(p);
            }
            rules.push(Rule {
                patterns,
                users: r.users.clone(),
                groups: r.groups.clone(),
                anonymous: r.anonymous,
                authenticated: r.authenticated,
                actions: Actions::of(&r.actions),
            });
        }
        Ok(Rules { groups: cfg.groups.clone(), rules, admins: cfg.admins.clone() })
    }

    /// Whether `identity` is an administrator (listed, or in a listed group).
    pub fn is_admin(&self, identity: &Identity) -> bool {
        let Some(user) = &identity.user else { return false };
        self.admins.iter().any(|a| match a.strip_prefix("group:") {
            Some(g) => self.groups.get(g).is_some_and(|m| m.iter().any(|u| u == user)),
            None => a == user,
        })
    }

    /// Whether any rule lets anonymous callers do anything.
    pub fn anonymous_anything(&self) -> bool {
        self.rules.iter().any(|r| r.anonymous && !r.actions.is_empty())
    }

    fn applies(&self, rule: &Rule, identity: &Identity) -> bool {
        if rule.anonymous {
            return true;
        }
        let Some(user) = &identity.user else { return false };
        rule.authenticated
            || rule.users.iter().any(|u| u == user)
            || rule.groups.iter().any(|g| self.groups.get(g).is_some_and(|m| m.iter().any(|u| u == user)))
    }

    /// Everything `identity` may do in `repo`.
    pub fn allowed(&self, identity: &Identity, repo: &RepoName) -> Actions {
        if self.rules.is_empty() {
            return if identity.user.is_some() { Actions::all() } else { Actions::none() };
        }
        let mut out = Actions::none();
        for rule in &self.rules {
            if !self.applies(rule, identity) {
                continue;
            }
            let hit = rule.patterns.iter().any(|p| {
                let p = match &identity.user {
                    Some(u) => p.replace("user", u),
                    None => p.clone(),
                };
                // A pattern naming the user matches nothing for anonymous callers.
                !p.has_placeholder() && p.matches(repo)
            });
            if hit {
                out.union(&rule.actions);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, RuleConfig};

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn rule(repos: &[&str], f: impl FnOnce(&mut RuleConfig)) -> RuleConfig {
        let mut r = RuleConfig {
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            users: vec![],
            groups: vec![],
            anonymous: false,
            authenticated: false,
            actions: vec![Action::Pull],
        };
        f(&mut r);
        r
    }

    #[test]
    fn actions_add_up_across_users_groups_and_anonymous() {
        let cfg = AccessConfig {
            admins: vec![],
            groups: [("devs".to_string(), vec!["bob".to_string()])].into(),
            rules: vec![
                rule(&["**"], |r| r.anonymous = true),
                rule(&["team/**"], |r| {
                    r.users = vec!["alice".into()];
                    r.actions = vec![Action::Pull, Action::Push];
                }),
                rule(&["team/**"], |r| {
                    r.groups = vec!["devs".into()];
                    r.actions = vec![Action::Delete];
                }),
                rule(&["home/{user}/**"], |r| {
                    r.authenticated = true;
                    r.actions = vec![Action::Pull, Action::Push, Action::Delete];
                }),
            ],
        };
        let rules = Rules::new(&cfg).unwrap();
        let alice = Identity::user("alice");
        let bob = Identity::user("bob");
        let anon = Identity::anonymous();
        assert_eq!(rules.allowed(&anon, &name("team/app")), Actions::of(&[Action::Pull]));
        assert_eq!(rules.allowed(&alice, &name("team/app")), Actions::of(&[Action::Pull, Action::Push]));
        assert_eq!(rules.allowed(&bob, &name("team/app")), Actions::of(&[Action::Pull, Action::Delete]));
        assert_eq!(rules.allowed(&alice, &name("home/alice/x")), Actions::all());
        assert_eq!(rules.allowed(&alice, &name("home/bob/x")), Actions::of(&[Action::Pull]));
        assert_eq!(rules.allowed(&anon, &name("home/alice/x")), Actions::of(&[Action::Pull]));
        assert!(rules.anonymous_anything());
    }

    #[test]
    fn without_rules_users_may_do_everything_and_anonymous_nothing() {
        let rules = Rules::new(&AccessConfig::default()).unwrap();
        assert_eq!(rules.allowed(&Identity::user("x"), &name("a")), Actions::all());
        assert!(rules.allowed(&Identity::anonymous(), &name("a")).is_empty());
        assert!(!rules.anonymous_anything());
    }
}
