//! The jail's PID 1: builds the jail, forks the command, reaps every orphan and forwards signals.
//!
//! A PID namespace's first process must reap the orphans reparented to it, and the kernel only
//! delivers it signals it handles; a shell or daemon run as the command expects neither role.
//! When the command ends, PID 1 exits with its status, and the kernel ends whatever else still
//! runs in the namespace.

use crate::enter::sys::{Fork, Sys};
use crate::enter::{exec_command, prepare_jail, EnterPlan, EXIT_SETUP_FAILED};

/// Runs in the first process of the new namespaces; returns the code it must exit with.
pub fn run(sys: &impl Sys, plan: &EnterPlan) -> i32 {
    if let Err(error) = prepare_jail(sys, plan) {
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
        Ok(Fork::Parent(command)) => match sys.supervise(command, true) {
            Ok(ended) => ended.code(),
            Err(error) => {
                eprintln!("jailprov enter: error: {error:#}");
                EXIT_SETUP_FAILED
            }
        },
        Err(error) => {
            eprintln!("jailprov enter: error: {error:#}");
            EXIT_SETUP_FAILED
        }
    }
}
