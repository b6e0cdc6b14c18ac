//! Capability names of the Jailfile (`[enter].capabilities`) as the set the command keeps.

use std::str::FromStr;

use anyhow::{anyhow, Result};
use caps::{Capability, CapsHashSet};

/// The capabilities to keep; every other one leaves all five sets (bounding included).
pub fn kept(names: &[String]) -> Result<CapsHashSet> {
    names
        .iter()
        .map(|name| Capability::from_str(name).map_err(|_| anyhow!("{name} is not a capability this jailprov knows")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_validated_by_the_spec_all_parse() {
        let all: Vec<String> = crate::spec::CAPABILITIES.iter().map(|name| (*name).to_owned()).collect();
        assert_eq!(kept(&all).expect("every spec capability parses").len(), all.len());
        assert!(kept(&[]).expect("nothing kept").is_empty());
        assert!(kept(&["CAP_NOPE".into()]).is_err());
    }
}
