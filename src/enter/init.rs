//! The jail's PID 1: builds the jail, forks the command, reaps every orphan and forwards signals.
//!
//! A PID namespace's first process must reap the orphans reparented to it, and the kernel only
//! delivers it signals it handles; a shell or daemon run as the command expects neither role.
//! When the command ends, PID 1 exits with its status, and the kernel ends whatever else still
//! runs in the namespace.
//!
//! PID 1 lives as long as the jail, beside what the jail runs: once the mount table is built it
//! keeps nothing an inhabitant could take from it. It drops every capability (the bounding set
//! too) and becomes non-dumpable (its /proc files become root's, no ptrace, no /proc/1/mem)
//! before the command can run: the command's process, forked with the capabilities it needs to
//! become the jail user, waits for PID 1 to be bare before it execs.

use anyhow::Result;
use caps::CapsHashSet;

use crate::enter::sys::{Fork, Sys};
use crate::enter::{exec_command, prepare_jail, EnterPlan, EXIT_SETUP_FAILED};

/// Runs in the first process of the new namespaces; returns the code it must exit with.
pub fn run(sys: &impl Sys, plan: &EnterPlan) -> i32 {
    // Out of the caller's session (and onto the jail's pty) before anything else.
    if let Err(error) = sys.leave_caller_session().and_then(|()| prepare_jail(sys, plan)) {
        eprintln!("jailprov enter: error: {error:#}");
        return EXIT_SETUP_FAILED;
    }
    // Without a PID namespace this process is no PID 1; it still adopts the command's orphans.
    if let Err(error) = sys.become_subreaper() {
        eprintln!("jailprov enter: error: {error:#}");
        return EXIT_SETUP_FAILED;
    }
    match sys.fork() {
        Ok(Fork::Child) => exec_command(sys, plan),
        Ok(Fork::Parent(command)) => {
            if let Err(error) = drop_own_privileges(sys, plan) {
                // The command's process sees the gate close and gives up; nothing ran.
                eprintln!("jailprov enter: error: {error:#}");
                return EXIT_SETUP_FAILED;
            }
            // A failure means the command's process already ended: supervise reports how.
            let _ = sys.release_command();
            let supervised =
                if plan.trace { sys.supervise_traced(command, &plan.argv[0]) } else { sys.supervise(command, true) };
            match supervised {
                Ok(ended) => ended.code(),
                Err(error) => {
                    eprintln!("jailprov enter: error: {error:#}");
                    EXIT_SETUP_FAILED
                }
            }
        }
        Err(error) => {
            eprintln!("jailprov enter: error: {error:#}");
            EXIT_SETUP_FAILED
        }
    }
}

/// PID 1 becomes the jail user with no capability in any set and no supplementary group, and
/// non-dumpable. The same uid as the command is what still lets it pass signals on (kill needs
/// a matching uid once CAP_KILL is gone); non-dumpable is what keeps that uid from ptracing it.
fn drop_own_privileges(sys: &impl Sys, plan: &EnterPlan) -> Result<()> {
    let nothing = CapsHashSet::new();
    // The bounding set while CAP_SETPCAP is still held.
    sys.drop_bounding_set(&nothing)?;
    // Where setgroups is denied (a rootless user namespace) there are none to drop.
    if plan.groups.is_some() {
        sys.set_groups(&[])?;
    }
    sys.set_ids(plan.uid, plan.gid)?;
    // A change of uid clears the parent-death signal: asked again, or the jail outlives jailprov.
    sys.die_with_parent()?;
    // Effective, permitted, inheritable and ambient: a jail user of uid 0 keeps them otherwise.
    sys.set_capabilities(&nothing)?;
    // Last: a change of uid resets the dumpable flag.
    sys.set_non_dumpable()
}
