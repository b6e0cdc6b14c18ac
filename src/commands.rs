//! plan, apply and destroy: the Jailfile through the pipeline to the jail on disk.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use jailprov::apply;
use jailprov::check;
use jailprov::cli::{
    ApplyArgs, CheckArgs, CheckFormat, DestroyArgs, JailfileArgs, LockArgs, OutputArgs, PlanArgs, PlanFormat,
};
use jailprov::closure::cache::ClosureCache;
use jailprov::desired::{self, ClosureFacts, DesiredKind, DesiredTree};
use jailprov::host::{HostFs, LookMark};
use jailprov::jail_root::JailRoot;
use jailprov::mountinfo::JailMounts;
use jailprov::plan::saved::{self, Digests, SavedPlan, SAVED_PLAN_FORMAT};
use jailprov::plan::{self, memo, reuse, Action, Change, Mounts, Plan, RecordedScan};
use jailprov::progress::Progress;
use jailprov::render::{self, ChangeList, Palette, Tense, Verbosity};
use jailprov::root_safety;
use jailprov::spec::Spec;
use jailprov::state::{applied, lock};
use jailprov::state::{State, StateStore};

use crate::{load_spec, print};

/// Exit code of `plan --detailed-exitcode` when changes are pending.
const CHANGES_PENDING: u8 = 2;

/// Everything a plan is computed from, read once.
struct Prepared {
    root: PathBuf,
    jailfile_digest: String,
    desired: DesiredTree,
    host: HostFs,
    store: StateStore,
    state: State,
    /// The jail's stat of every recorded path, read alongside the host side.
    recorded: RecordedScan,
    /// The persistent mount wishes, and what is mounted in the jail now.
    mounts: Mounts,
    jail: Option<JailRoot>,
    /// What Jailfile.lock needs from the closure (src/state/lock/).
    lock_facts: ClosureFacts,
    /// How far the host's looks had come when the desired tree was computed (when observing).
    host_side_looks: Option<LookMark>,
}

/// Computes everything a plan needs from an already loaded Spec (loaded once per command);
/// the host side is taken from the plan's cache (`cache`: its file and the key it must have)
/// when that holds.
fn prepare(
    spec: &Spec,
    host: HostFs,
    jailfile: &Path,
    state_dir: &Path,
    cache: Option<(&Path, &reuse::Key)>,
) -> Result<Prepared> {
    let root = spec.root()?;
    let store = StateStore::for_root(state_dir, root);
    let jail = open_jail_if_present(root)?;
    let active = if jail.is_some() { JailMounts::read(root)? } else { JailMounts::default() };
    // Two independent sides: the jail's (the record, tens of megabytes for a big jail, and a
    // stat of every path it names) and the host's (closure and desired tree). Each has serial
    // stretches that leave a core to the other.
    let (jail_side, desired) = std::thread::scope(|scope| {
        let jail_side = scope.spawn(|| -> Result<(State, RecordedScan)> {
            let state = {
                let _t = jailprov::timings::phase("state load");
                store.load(root)?
            };
            let _t = jailprov::timings::phase("jail scan of recorded");
            let recorded = plan::scan_recorded(&state, jail.as_ref())?;
            Ok((state, recorded))
        });
        let desired = match cache.and_then(|(file, key)| reuse::take(file, key)) {
            Some(kept) => Ok(kept),
            None => {
                let _t = jailprov::timings::phase("host side (closure+desired)");
                desired::desired_with_facts(spec, &host, ClosureCache::in_state_dir(state_dir))
            }
        };
        let jail_side = jail_side.join().unwrap_or_else(|_| Err(anyhow::anyhow!("reading the state record panicked")));
        (jail_side, desired)
    });
    let ((state, recorded), (desired, lock_facts)) = (jail_side?, desired?);
    let host_side_looks = host.mark();
    let source = jailprov::beside::read_text(jailfile, "Jailfile", jailprov::spec::MAX_JAILFILE_SIZE)?;
    Ok(Prepared {
        root: root.to_path_buf(),
        // What the Jailfile says, not how it is written: a reformatted Jailfile (line endings,
        // comments, key order) leaves a saved plan valid, as it leaves the lock unchanged.
        jailfile_digest: lock::jailfile_digest(jailfile, &source)?,
        desired,
        host,
        store,
        state,
        recorded,
        mounts: Mounts::of(&spec.mounts, active),
        jail,
        lock_facts,
        host_side_looks,
    })
}

/// The jail root, or None when it does not exist yet. Anything else in its place (a symlink,
/// a file) is an error: never mistaken for "no jail", which would lose track of what it holds.
fn open_jail_if_present(root: &Path) -> Result<Option<JailRoot>> {
    match std::fs::symlink_metadata(root) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot inspect {}", root.display())),
        Ok(_) => JailRoot::open(root).map(Some),
    }
}

impl Prepared {
    /// Checks Jailfile.lock against what the host gives, as `mode` says: plan only compares,
    /// apply writes it when missing or stale, `--locked` refuses any difference.
    fn review_lock(&self, jailfile: &Path, state_dir: &Path, mode: lock::Mode) -> Result<lock::Review> {
        let inputs =
            lock::Inputs { jailfile, desired: &self.desired, facts: &self.lock_facts, host: &self.host, state_dir };
        lock::review(&inputs, mode)
    }

    /// The lock review and the plan, side by side: both only read the jail (apply's review
    /// writes the lock beside the Jailfile, never the jail), and neither needs the other. A
    /// failed review (`--locked`) wins over the plan, so nothing is applied. With `want_scan`,
    /// also the jail scan the plan was judged on (for the plan memo).
    fn review_and_plan(
        &self,
        jailfile: &Path,
        state_dir: &Path,
        mode: lock::Mode,
        adopt: bool,
        want_scan: bool,
    ) -> Result<(lock::Review, Plan, Option<plan::JailScan>)> {
        let (review, planned) = std::thread::scope(|scope| {
            let review = scope.spawn(|| {
                let _t = jailprov::timings::phase("lock review");
                self.review_lock(jailfile, state_dir, mode)
            });
            let planned = {
                let _t = jailprov::timings::phase("plan compute");
                plan::compute_with_scan(
                    &self.desired,
                    self.jail.as_ref(),
                    &self.state,
                    &self.recorded,
                    &self.mounts,
                    &self.host,
                    adopt,
                    want_scan,
                )
            };
            let review = review.join().unwrap_or_else(|_| Err(anyhow::anyhow!("reviewing the lock panicked")));
            (review, planned)
        });
        let (plan, scan) = planned?;
        Ok((review?, plan, scan))
    }

    fn digests(&self) -> Result<Digests> {
        Ok(Digests {
            jailfile: self.jailfile_digest.clone(),
            host: plan::desired_digest(&self.desired),
            jail: plan::jail_digest(&self.desired, self.jail.as_ref(), &self.state)?,
        })
    }
}

/// How much of a long list to print, from `-v` / `-q`.
fn verbosity(output: &OutputArgs) -> Verbosity {
    match (output.verbose, output.quiet) {
        (true, _) => Verbosity::Verbose,
        (_, true) => Verbosity::Quiet,
        _ => Verbosity::Normal,
    }
}

/// Says on stderr when the Jailfile was last applied to another root than the one targeted now:
/// `apply --root B`, then a plain `plan`, would otherwise look at another jail without a word.
pub(crate) fn warn_if_applied_elsewhere(jailfile: &JailfileArgs, state_dir: &Path, root: &Path) {
    let Some(last) = applied::other_root(state_dir, &jailfile.file, root) else { return };
    let targeted = if jailfile.root.is_some() { "--root" } else { "the Jailfile's `root`" };
    eprintln!(
        "warning: {} was last applied to {}, but this command targets {} ({targeted}); pass --root {} to work on \
         the jail applied last",
        jailfile.file.display(),
        last.display(),
        root.display(),
        last.display()
    );
}

/// Notes which Jailfile was just applied to which root (the origin beside the record), for
/// `jailprov status` and [`warn_if_applied_elsewhere`]. Only a note: the jail is applied whether
/// or not it could be written.
fn note_applied(state_dir: &Path, store: &StateStore, jailfile: &Path, root: &Path) {
    if let Err(error) = store.write_origin(jailfile, root) {
        eprintln!("warning: cannot note in {} which root was applied: {error:#}", state_dir.display());
    }
}

pub fn plan(args: &PlanArgs) -> Result<ExitCode> {
    // Everything the plan looks at on the host is written down, for the memo.
    let host = HostFs::real().observing();
    let spec = load_spec(&args.jailfile, &host)?;
    warn_if_applied_elsewhere(&args.jailfile, &args.state.state_dir, spec.root()?);
    if args.destroy {
        return plan_destroy(args, spec.root()?, &host);
    }
    let store = StateStore::for_root(&args.state.state_dir, spec.root()?);
    let key = memo_key(&spec, &args.jailfile.file, &store, args.adopt)?;
    // A saved plan needs the digests of a full computation: no shortcut then.
    let memo = if args.out.is_none() { MemoContext::of(&spec, &store, &key)? } else { None };
    let cache_key = reuse::Key::now(key);
    if let Some(memo) = &memo {
        if let Some(warnings) = memo::answers(&memo.file, &memo.key, &memo.jail) {
            let _said = jailprov::timings::phase("plan: answered by the memo, closure not computed");
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            return print_plan(args, spec.root()?, &Plan::default(), &fresh_review(&args.jailfile.file));
        }
    }
    let prepared = prepare(&spec, host, &args.jailfile.file, &args.state.state_dir, None)?;
    // plan never writes the lock: drift stays in every plan until `lock` or `apply` accepts it.
    let mode = if args.locked { lock::Mode::Locked } else { lock::Mode::Review };
    let (review, plan, jail_scan) =
        prepared.review_and_plan(&args.jailfile.file, &args.state.state_dir, mode, args.adopt, true)?;
    if let Some(out) = &args.out {
        let saved = SavedPlan {
            format_version: SAVED_PLAN_FORMAT.into(),
            // Absolute, so `apply FILE` works from any directory.
            jailfile: std::path::absolute(&args.jailfile.file)
                .with_context(|| format!("cannot resolve {}", args.jailfile.file.display()))?,
            root: prepared.root.clone(),
            adopt: args.adopt,
            digests: prepared.digests()?,
            plan: plan.clone(),
        };
        let text = serde_json::to_string_pretty(&saved).context("serializing the plan")?;
        // A fresh temporary file renamed over FILE: a symlink planted at FILE is replaced, never
        // written through. 0600: the plan's diffs may show the content of secret files.
        jailprov::beside::write_atomically(out, text.as_bytes(), 0o600, false)
            .with_context(|| format!("cannot write the plan to {}", out.display()))?;
    }
    let code = print_plan(args, &prepared.root, &plan, &review)?;
    let mounts_as_keyed = format!("{:?}", prepared.mounts.active) == cache_key.memo.mounts;
    // The looks the desired tree came from (not the lock review's or the plan's reads after them).
    if let Some(observations) = prepared.host_side_looks.and_then(|mark| prepared.host.observations_before(mark)) {
        if mounts_as_keyed {
            reuse::keep(&store.plan_cache_file, cache_key, &observations, &prepared.desired, &prepared.lock_facts);
        }
    }
    if let (Some(memo), Some(jail_scan)) = (memo, jail_scan) {
        // Never while the lock is pending: the memo's "no changes" would hide it. None: the host
        // moved under the plan, or a path changed moments before it was looked at.
        let lock_fresh = !review.pending() && !review.wrote;
        let observations = prepared.host.observations();
        if let (true, true, true, Some(observations)) = (is_empty(&plan), lock_fresh, mounts_as_keyed, observations) {
            memo::record(&memo.file, memo.key, prepared.desired.warnings.clone(), &observations, jail_scan);
        }
    }
    // The process ends here: freeing a 50,000-path tree entry by entry only costs time.
    std::mem::forget(prepared);
    Ok(code)
}

/// Prints a plan (text or JSON, with the lock's host drift) and says which exit code it means:
/// a missing or stale lock is pending like a jail change.
fn print_plan(args: &PlanArgs, root: &Path, plan: &Plan, review: &lock::Review) -> Result<ExitCode> {
    match args.format {
        PlanFormat::Text => {
            let text =
                render::plan_text_in(plan, root, &args.jailfile.file, Palette::for_stdout(), verbosity(&args.output));
            print(&format!("{}{text}", lock::drift_text(review)))?
        }
        PlanFormat::Json => print(&jailprov::reports::plan_json(plan, review))?,
    };
    let pending = plan.has_changes() || review.pending();
    Ok(if args.detailed_exitcode && pending { ExitCode::from(CHANGES_PENDING) } else { ExitCode::SUCCESS })
}

/// The review of a lock found fresh (what the memo vouches for).
fn fresh_review(jailfile: &Path) -> lock::Review {
    lock::Review::fresh(lock::lock_path(jailfile))
}

/// Nothing at all to do: no change, conflict, adoption, record refresh or record cleanup.
fn is_empty(plan: &Plan) -> bool {
    plan.changes.is_empty()
        && plan.conflicts.is_empty()
        && plan.adopt.is_empty()
        && plan.refresh.is_empty()
        && plan.forget.is_empty()
        && plan.forget_mounts.is_empty()
}

/// What the plan memo of one jail is keyed by, taken before anything is looked at.
struct MemoContext {
    file: PathBuf,
    key: memo::Key,
    jail: JailRoot,
}

impl MemoContext {
    /// None when there is no jail yet (nothing to vouch for).
    fn of(spec: &Spec, store: &StateStore, key: &memo::Key) -> Result<Option<MemoContext>> {
        let Some(jail) = open_jail_if_present(spec.root()?)? else { return Ok(None) };
        Ok(Some(MemoContext { file: store.memo_file.clone(), key: key.clone(), jail }))
    }
}

/// What a plan of `spec` is computed from besides the paths it looks at (the plan memo's and
/// the plan cache's key), taken before anything is looked at.
fn memo_key(spec: &Spec, jailfile: &Path, store: &StateStore, adopt: bool) -> Result<memo::Key> {
    let root = spec.root()?;
    let source = jailprov::beside::read_text(jailfile, "Jailfile", jailprov::spec::MAX_JAILFILE_SIZE)?;
    let mounts = if std::fs::symlink_metadata(root).is_ok() { JailMounts::read(root)? } else { JailMounts::default() };
    Ok(memo::Key::now(jailfile, &lock::jailfile_digest(jailfile, &source)?, root, adopt, store, format!("{mounts:?}")))
}

pub fn apply(args: &ApplyArgs) -> Result<ExitCode> {
    let saved = match &args.plan_file {
        Some(file) => Some(read_saved_plan(file)?),
        None => None,
    };
    // A saved plan names its Jailfile and root: apply exactly what was planned.
    let jailfile = match &saved {
        Some(saved) => JailfileArgs { file: saved.jailfile.clone(), root: Some(saved.root.clone()) },
        None => JailfileArgs { file: args.jailfile.file.clone(), root: args.jailfile.root.clone() },
    };
    let adopt = saved.as_ref().map_or(args.adopt, |saved| saved.adopt);
    let host = HostFs::real();
    let spec = load_spec(&jailfile, &host)?;
    let root = spec.root()?.to_path_buf();
    warn_if_applied_elsewhere(&jailfile, &args.state.state_dir, &root);
    if !args.unsafe_root {
        root_safety::check(&root)?;
    }
    let store = StateStore::for_root(&args.state.state_dir, &root);
    let _lock = store.lock(Duration::from_secs(args.lock_timeout))?;
    // What the plan just before computed from the host, if nothing it came from moved since.
    let cache_key = reuse::Key::now(memo_key(&spec, &jailfile.file, &store, adopt)?);
    let cache = Some((store.plan_cache_file.as_path(), &cache_key));
    let mut prepared = prepare(&spec, host, &jailfile.file, &args.state.state_dir, cache)?;
    let mode = if args.locked { lock::Mode::Locked } else { lock::Mode::Refresh };
    let (review, plan, _) = prepared.review_and_plan(&jailfile.file, &args.state.state_dir, mode, adopt, false)?;
    // A plain apply accepts drift: it says what it wrote into the lock, as `jailprov lock` does.
    eprint!("{}", lock::written_text(&review).unwrap_or_else(|| lock::drift_text(&review)));
    if let Some(saved) = &saved {
        refuse_stale(saved, &prepared.digests()?, &plan)?;
    }
    // An interrupted apply is finished even when nothing is left to change: its temporary
    // files are swept and the record marked complete.
    let json = args.format == PlanFormat::Json;
    if is_empty(&plan) && !prepared.state.interrupted {
        // Applied all the same: `jailprov status` counts from here.
        note_applied(&args.state.state_dir, &prepared.store, &jailfile.file, &root);
        print(&if json { render::apply_json(&Plan::default()) } else { render::no_changes(&jailfile.file) })?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.interactive && !confirm(&plan, &root, &jailfile.file, verbosity(&args.output))? {
        print("Apply cancelled.\n")?;
        return Ok(ExitCode::from(1));
    }
    let jail = match prepared.jail.take() {
        Some(jail) => {
            if !args.unsafe_root {
                root_safety::check_opened(&jail)?;
            }
            jail
        }
        None => root_safety::create_root(&root, args.unsafe_root)?,
    };
    let jail = &*prepared.jail.insert(jail);
    let mut list = ChangeList::new(plan.changes.len(), verbosity(&args.output));
    {
        let palette = Palette::for_stdout();
        let mut stdout = std::io::stdout().lock();
        let desired = &prepared.desired;
        let bytes = plan.changes.iter().map(|change| bytes_written(desired, change)).sum();
        let progress = Progress::items_and_bytes("apply", plan.changes.len() as u64, bytes, !json);
        // JSON mode prints one object at the end, nothing per change.
        let mut report = |change: &Change| {
            progress.step(bytes_written(desired, change));
            if !json && list.admit(change, 1) {
                progress.suspend(|| writeln!(stdout, "{}", render::change_line(change, palette)).ok());
            }
        };
        let state = &mut prepared.state;
        let _t = jailprov::timings::phase("apply");
        apply::apply(&plan, &prepared.desired, jail, &prepared.host, state, &prepared.store, &mut report)?;
    }
    note_applied(&args.state.state_dir, &prepared.store, &jailfile.file, &root);
    if let Some(count) = jailprov::kill_point::count() {
        // For tests/interrupt.rs: how many crash points a whole apply passes.
        eprintln!("kill points passed: {count}");
    }
    if json {
        return print(&render::apply_json(&plan));
    }
    let done = render::summary_text(&plan.summary(), Tense::Done, Palette::PLAIN);
    let gap = if verbosity(&args.output) == Verbosity::Quiet { "" } else { "\n" };
    print(&format!("{}{gap}Apply complete: {done}.\n", list.close("")))
}

/// The bytes a change writes into the jail: a file's content (0 for the rest).
fn bytes_written(desired: &DesiredTree, change: &Change) -> u64 {
    if !matches!(change.action, Action::Create | Action::Update | Action::Replace) {
        return 0;
    }
    match desired.nodes.get(&change.path).map(|node| &node.kind) {
        Some(DesiredKind::File { source_print, .. }) => source_print.size,
        Some(DesiredKind::Content { bytes }) => bytes.len() as u64,
        _ => 0,
    }
}

/// The largest saved plan read: a plan of a 50,000-path jail with its diffs is a few tens of MiB.
const MAX_SAVED_PLAN_SIZE: u64 = 256 * 1024 * 1024;

/// A saved plan decides what apply deletes: it is read only from a regular file owned by root or
/// the invoking user that no one else can write (one another user could edit is theirs to forge).
fn read_saved_plan(file: &Path) -> Result<SavedPlan> {
    use std::os::unix::fs::MetadataExt;
    let what = "the saved plan";
    let Some((opened, metadata)) = jailprov::beside::open_regular(file, what, MAX_SAVED_PLAN_SIZE)? else {
        bail!("cannot read the saved plan {}: it does not exist", file.display());
    };
    if !jailprov::beside::trusted_owner(&metadata) {
        bail!(
            "the saved plan {} is owned by uid {} with mode {:04o}: apply reads a plan only from a file owned by root or \
             you and writable by no one else (another user could have edited it); `chown` it and `chmod go-w` it, or plan again",
            file.display(),
            metadata.uid(),
            metadata.mode() & 0o7777
        );
    }
    let bytes = jailprov::beside::read_bounded(&opened, file, what, MAX_SAVED_PLAN_SIZE)?;
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the saved plan {} is not UTF-8", file.display()))?;
    saved::parse(&text, file)
}

/// A saved plan is applied only if nothing it was computed from has moved.
fn refuse_stale(saved: &SavedPlan, now: &Digests, plan: &Plan) -> Result<()> {
    let mut moved = Vec::new();
    if saved.digests.jailfile != now.jailfile {
        moved.push(format!("the Jailfile {} was edited", saved.jailfile.display()));
    }
    // An edited Jailfile changes the desired tree too; name the host only when it alone moved.
    if saved.digests.jailfile == now.jailfile && saved.digests.host != now.host {
        moved.push("the host changed what the Jailfile brings (a library, file or device differs)".to_owned());
    }
    if saved.digests.jail != now.jail {
        moved.push(format!("the jail {} changed", saved.root.display()));
    }
    if moved.is_empty() && !same_plan(&saved.plan, plan) {
        moved.push("the plan computed now differs".to_owned());
    }
    if !moved.is_empty() {
        bail!("the saved plan is stale, nothing was applied: {}; run `jailprov plan -o` again", moved.join("; "));
    }
    Ok(())
}

/// Whether a saved plan is the one computed now. A plan saved before changes carried the node
/// they saw (`seen`) still matches: the jail digest, equal by then, covers the same inodes.
/// Whole texts are never saved; the saved diff pins the same content.
fn same_plan(saved: &Plan, now: &Plan) -> bool {
    let mut saved = saved.clone();
    for (old, new) in saved.changes.iter_mut().zip(&now.changes) {
        if old.seen.is_none() {
            old.seen = new.seen;
        }
        if old.diff == new.diff {
            old.texts.clone_from(&new.texts);
        }
    }
    saved == *now
}

fn confirm(plan: &Plan, root: &Path, jailfile: &Path, verbosity: Verbosity) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("--interactive needs a terminal to ask on; drop it in scripts");
    }
    print(&render::plan_text_in(plan, root, jailfile, Palette::for_stdout(), verbosity))?;
    ask_yes("\nApply these changes? Only 'yes' is accepted: ")
}

/// Asks `question` on the terminal; true only for the answer "yes" (as Terraform: `y` is no).
fn ask_yes(question: &str) -> Result<bool> {
    print(question)?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("reading the answer")?;
    Ok(answer.trim() == "yes")
}

/// `jailprov lock`: writes Jailfile.lock, or says it is up to date, or what changed.
pub fn lock(args: &LockArgs) -> Result<ExitCode> {
    let host = HostFs::real();
    let spec = jailprov::spec::load(&args.jailfile.file, args.jailfile.root.as_deref(), &host)?;
    let progress = Progress::spinner(
        "lock: reading and hashing what the jail takes from the host",
        args.format == PlanFormat::Text,
    );
    let (_, review) =
        desired_and_lock_review(&spec, &host, &args.jailfile.file, &args.state.state_dir, lock::Mode::Deliberate)?;
    progress.finish();
    let text = match args.format {
        PlanFormat::Json => jailprov::reports::to_json(&jailprov::reports::LockReport::of(&review)),
        PlanFormat::Text => lock::written_text(&review).unwrap_or_else(|| {
            let entries = jailprov::words::count(review.entries, "entry");
            format!("{} is up to date ({entries}).\n", review.lock_path.display())
        }),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The desired tree of `spec` and the review of its Jailfile.lock in `mode` (for the commands that
/// review the lock without planning: `lock`, `export`).
fn desired_and_lock_review(
    spec: &Spec,
    host: &HostFs,
    jailfile: &Path,
    state_dir: &Path,
    mode: lock::Mode,
) -> Result<(DesiredTree, lock::Review)> {
    let (desired, facts) = desired::desired_with_facts(spec, host, ClosureCache::in_state_dir(state_dir))?;
    let inputs = lock::Inputs { jailfile, desired: &desired, facts: &facts, host, state_dir };
    let review = lock::review(&inputs, mode)?;
    Ok((desired, review))
}

/// Removes the record of a destroyed jail, and the plan memo beside it (the memo's key, taken
/// on the record's stat, would not answer for the jail anyway: this only leaves no stale file).
fn forget_jail(store: &StateStore) -> Result<()> {
    memo::forget(&store.memo_file);
    reuse::forget(&store.plan_cache_file);
    store.remove()
}

/// `jailprov check`: audits the jail, and with `--fix` repairs it and audits it again.
pub fn check(args: &CheckArgs) -> Result<ExitCode> {
    let host = HostFs::real();
    let spec = jailprov::spec::load(&args.jailfile.file, args.jailfile.root.as_deref(), &host)?;
    let root = spec.root()?.to_path_buf();
    warn_if_applied_elsewhere(&args.jailfile, &args.state.state_dir, &root);
    let Ok(metadata) = std::fs::symlink_metadata(&root) else {
        bail!("{} does not exist: nothing to check (run `jailprov apply` first)", root.display());
    };
    if metadata.file_type().is_symlink() {
        bail!("the jail root {} is a symlink; name the real directory", root.display());
    }
    let text_output = args.format == CheckFormat::Text;
    let progress = Progress::spinner("check: reading what the Jailfile brings", text_output);
    let (desired, _) = desired::desired_with_facts(&spec, &host, ClosureCache::in_state_dir(&args.state.state_dir))?;
    progress.finish();
    let mounts = Mounts::of(&spec.mounts, JailMounts::read(&root)?);
    let store = StateStore::for_root(&args.state.state_dir, &root);
    let jail = JailRoot::open(&root)?;
    let audit_now = || -> Result<(State, check::Audit)> {
        let state = store.load(&root)?;
        let audit = check::audit(&desired, &mounts, &jail, &state, &host, &root, text_output)?;
        Ok((state, audit))
    };
    let mut repair = None;
    let found = if args.fix {
        if !args.unsafe_root {
            root_safety::check(&root)?;
        }
        let _lock = store.lock(Duration::from_secs(args.lock_timeout))?;
        let (mut state, found) = audit_now()?;
        repair = Some(check::fix(&desired, &mounts, &jail, &mut state, &store, &host, &found)?);
        audit_now()?.1
    } else {
        audit_now()?.1
    };
    let text = match args.format {
        CheckFormat::Text => check::text(&found, repair.as_ref(), &root),
        CheckFormat::Json => check::json(&found, repair.as_ref(), &root),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(if found.errors() > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// What destroy removes from `jail`: every mount jailprov made first, then every file it created
/// (the plan against nothing wished).
fn teardown_plan(jail: &JailRoot, root: &Path, state: &State, host: &HostFs) -> Result<Plan> {
    let mounts = Mounts { wished: Vec::new(), active: JailMounts::read(root)? };
    plan::compute(&DesiredTree::default(), Some(jail), state, &RecordedScan::default(), &mounts, host, false)
}

/// `plan --destroy`: what `destroy` would remove, read only (no lock taken, nothing written).
fn plan_destroy(args: &PlanArgs, root: &Path, host: &HostFs) -> Result<ExitCode> {
    let plan = match open_jail_if_present(root)? {
        Some(jail) => {
            let state = StateStore::for_root(&args.state.state_dir, root).load(root)?;
            teardown_plan(&jail, root, &state, host)?
        }
        None => Plan::default(),
    };
    match args.format {
        // The plan's own schema; a teardown reviews no lock, so it reads as fresh.
        PlanFormat::Json => {
            print(&jailprov::reports::plan_json(&plan, &lock::Review::fresh(lock::lock_path(&args.jailfile.file))))?
        }
        PlanFormat::Text if plan.changes.is_empty() => print(&nothing_to_destroy(root))?,
        PlanFormat::Text => print(&render::plan_text_in(
            &plan,
            root,
            &args.jailfile.file,
            Palette::for_stdout(),
            verbosity(&args.output),
        ))?,
    };
    let pending = args.detailed_exitcode && plan.has_changes();
    Ok(if pending { ExitCode::from(CHANGES_PENDING) } else { ExitCode::SUCCESS })
}

fn nothing_to_destroy(root: &Path) -> String {
    if std::fs::symlink_metadata(root).is_err() {
        format!("Nothing to destroy: {} does not exist.\n", root.display())
    } else {
        format!("Nothing to destroy: {} holds nothing jailprov created.\n", root.display())
    }
}

/// Destroy asks first: on a terminal it shows what goes and wants "yes"; elsewhere only `--yes`
/// lets it go on (a script that meant it says so). Ok(false): the answer was no.
fn destroy_confirmed(args: &DestroyArgs, plan: &Plan, root: &Path) -> Result<bool> {
    if args.yes || plan.changes.is_empty() {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "destroy would remove {} from {} and asks first, but stdin is not a terminal: pass --yes to destroy \
             without asking (`jailprov plan --destroy` lists what would go)",
            jailprov::words::count(plan.changes.len(), "path"),
            root.display()
        );
    }
    print(&render::plan_text_in(plan, root, &args.jailfile.file, Palette::for_stdout(), verbosity(&args.output)))?;
    ask_yes(&format!("\nDestroy these in {}? Only 'yes' is accepted: ", root.display()))
}

pub fn destroy(args: &DestroyArgs) -> Result<ExitCode> {
    let host = HostFs::real();
    let root = load_spec(&args.jailfile, &host)?.root()?.to_path_buf();
    warn_if_applied_elsewhere(&args.jailfile, &args.state.state_dir, &root);
    if !args.unsafe_root {
        root_safety::check(&root)?;
    }
    let store = StateStore::for_root(&args.state.state_dir, &root);
    let _lock = store.lock(Duration::from_secs(args.lock_timeout))?;
    let mut state = store.load(&root)?;
    let Some(jail) = open_jail_if_present(&root)? else {
        forget_jail(&store)?;
        return print(&nothing_to_destroy(&root));
    };
    let plan = teardown_plan(&jail, &root, &state, &host)?;
    if !destroy_confirmed(args, &plan, &root)? {
        print("Destroy cancelled: nothing was removed.\n")?;
        return Ok(ExitCode::from(1));
    }
    let verbosity = verbosity(&args.output);
    // Asked on a terminal, the list was just shown: it is not printed a second time.
    let shown_already = !args.yes && !plan.changes.is_empty();
    let mut list = ChangeList::new(plan.changes.len(), if shown_already { Verbosity::Quiet } else { verbosity });
    {
        let palette = Palette::for_stdout();
        let mut stdout = std::io::stdout().lock();
        let mut report = |change: &Change| {
            if list.admit(change, 1) {
                let _ = writeln!(stdout, "{}", render::change_line(change, palette));
            }
        };
        apply::apply(&plan, &DesiredTree::default(), &jail, &host, &mut state, &store, &mut report)?;
    }
    let leftovers = jail.list(&jailprov::tree::JailPath::root())?;
    // A blank line between the list and the closing line, when a list was printed.
    let listed = !plan.changes.is_empty() && !shown_already && verbosity != Verbosity::Quiet;
    let gap = if listed { "\n" } else { "" };
    let mut text = format!("{}{gap}Destroy complete: {}.\n", list.close(""), destroyed_words(&plan));
    if leftovers.is_empty() {
        drop(jail);
        #[allow(clippy::disallowed_methods)] // the empty root itself, from outside the jail
        std::fs::remove_dir(&root).with_context(|| format!("cannot remove the empty jail root {}", root.display()))?;
        forget_jail(&store)?;
        text.push_str(&format!("Removed the empty jail root {}.\n", root.display()));
    } else {
        if state.entries.is_empty() && state.mounts.is_empty() {
            // Nothing left that jailprov manages: no record either.
            forget_jail(&store)?;
        }
        text.push_str(&kept_text(&root, &leftovers, &plan, verbosity));
    }
    print(&text)
}

/// "3 deleted, 1 unmounted": what destroy did, in the words of the plan's JSON summary.
fn destroyed_words(plan: &Plan) -> String {
    let summary = plan.summary();
    let unmounted = if summary.unmount > 0 { format!(", {} unmounted", summary.unmount) } else { String::new() };
    format!("{} deleted{unmounted}", summary.delete)
}

/// What destroy left in the root: what jailprov did not create (and the directories of its own
/// that hold such files), listed as long lists are.
fn kept_text(root: &Path, leftovers: &[std::ffi::OsString], plan: &Plan, verbosity: Verbosity) -> String {
    use std::os::unix::ffi::OsStrExt;
    let paths: Vec<String> = leftovers
        .iter()
        .map(|name| {
            let path = format!("/{}", jailprov::jail_root::escaped(name.as_bytes()));
            let note = if plan.kept.iter().any(|kept| kept.as_str() == path) {
                " (created by jailprov, kept: holds files jailprov did not create)"
            } else {
                ""
            };
            format!("{path}{note}")
        })
        .collect();
    if verbosity == Verbosity::Quiet {
        return format!(
            "Kept {}: it holds {} jailprov did not create.\n",
            root.display(),
            jailprov::words::count(paths.len(), "path")
        );
    }
    format!(
        "Kept {} and what jailprov did not create in it:\n{}",
        root.display(),
        render::path_list(&paths, "  ", verbosity)
    )
}

/// `jailprov export`: the image from the same desired tree and lock review plan and apply use
/// (the lock must be up to date: what is exported is what was reviewed), or the systemd unit.
pub fn export(args: &jailprov::cli::ExportArgs) -> Result<ExitCode> {
    use jailprov::cli::ExportFormat;
    let host = HostFs::real();
    let spec = load_spec(&args.jailfile, &host)?;
    let format = match args.format {
        ExportFormat::Systemd => {
            warn_if_applied_elsewhere(&args.jailfile, &args.state.state_dir, spec.root()?);
            let unit = jailprov::export::write_unit(&spec, spec.root()?, &args.output)?;
            return print(&format!("Wrote {}.\n", unit.display()));
        }
        ExportFormat::OciLayout => jailprov::export::Format::OciLayout,
        ExportFormat::OciArchive => jailprov::export::Format::OciArchive,
        ExportFormat::DockerArchive => jailprov::export::Format::DockerArchive,
    };
    if args.tag.is_empty() || !args.tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        bail!("--tag {:?}: a tag is letters, digits, `.`, `_` and `-` (e.g. latest, 1.2.0)", args.tag);
    }
    let progress = Progress::spinner(&format!("export: writing {}", args.output.display()), true);
    let (desired, _) =
        desired_and_lock_review(&spec, &host, &args.jailfile.file, &args.state.state_dir, lock::Mode::Locked)
            .context("jailprov export ships only what Jailfile.lock records")?;
    let lock_path = lock::lock_path(&args.jailfile.file);
    let lock_text = jailprov::beside::read_text(&lock_path, "the lock", MAX_LOCK_SIZE)?;
    let parsed = lock::Lock::parse(&lock_text, &lock_path)?;
    let image = jailprov::export::Image {
        spec: &spec,
        desired: &desired,
        lock: &parsed,
        jailfile_digest: parsed.jailfile.clone(),
        lock_digest: jailprov::export::sha256_text(lock_text.as_bytes()),
        tag: args.tag.clone(),
    };
    let exported = jailprov::export::write_image(&image, &host, format, &args.output)?;
    progress.finish();
    let mut text = format!(
        "Wrote {} ({}, manifest {}):\n",
        args.output.display(),
        jailprov::words::count(exported.layers.len(), "layer"),
        exported.manifest_digest
    );
    for (what, digest, size) in &exported.layers {
        text.push_str(&format!("  {digest}  {size:>10}  {what}\n"));
    }
    print(&text)
}

/// The largest lock export reads (a 50,000-path lock is some 15 MB).
const MAX_LOCK_SIZE: u64 = 512 * 1024 * 1024;

/// Exit code of `status --detailed-exitcode` when some jail is behind.
const JAILS_BEHIND: u8 = 2;

/// `jailprov status`: every recorded jail, current or behind the host, or orphaned.
pub fn status(args: &jailprov::cli::StatusArgs) -> Result<ExitCode> {
    let report = jailprov::status::collect(&args.state.state_dir, &HostFs::real(), args.processes)?;
    print(&match args.format {
        jailprov::cli::StatusFormat::Text => jailprov::status::text(&report),
        jailprov::cli::StatusFormat::Json => report.json()?,
    })?;
    Ok(match args.detailed_exitcode {
        false => ExitCode::SUCCESS,
        true if report.unknown() > 0 => ExitCode::from(1),
        true if report.behind() > 0 => ExitCode::from(JAILS_BEHIND),
        true => ExitCode::SUCCESS,
    })
}

/// `jailprov forget ROOT`: drops the record of a jail whose root or Jailfile is gone.
pub fn forget(args: &jailprov::cli::ForgetArgs) -> Result<ExitCode> {
    let root = &args.root;
    let store = StateStore::for_root(&args.state.state_dir, root);
    if !store.state_file.exists() {
        bail!("{} has no record in {}: nothing to forget", root.display(), args.state.state_dir.display());
    }
    let _lock = store.lock(Duration::ZERO)?;
    let jailfile = store.load_origin()?.map(|origin| origin.jailfile);
    let still_there = root.exists() && jailfile.as_ref().is_none_or(|jailfile| jailfile.exists());
    if still_there && !args.force {
        bail!(
            "{} and its Jailfile are still there: `jailprov destroy` removes the jail and its record \
             (forget --force drops the record alone, and jailprov no longer knows its files)",
            root.display()
        );
    }
    forget_jail(&store)?;
    print(&format!("Forgot the record of {}.\n", root.display()))
}

/// `jailprov hook install|remove|run`.
pub fn hook(args: &jailprov::cli::HookArgs) -> Result<ExitCode> {
    use jailprov::cli::HookAction;
    use jailprov::hook;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(if args.systemd { "/etc/systemd/system" } else { "/etc/apt/apt.conf.d" }));
    match args.action {
        HookAction::Install => {
            let exe = std::env::current_exe().context("cannot find the jailprov executable")?;
            let written = hook::install(&dir, &exe, &args.state.state_dir, args.systemd)?;
            let mut text: String = written.iter().map(|path| format!("Wrote {}\n", path.display())).collect();
            if args.systemd {
                text.push_str(&format!(
                    "Start the timer with `systemctl daemon-reload && systemctl enable --now {}`.\n",
                    hook::TIMER_NAME
                ));
            }
            print(&text)
        }
        HookAction::Remove => {
            let removed = hook::remove(&dir, args.systemd)?;
            print(&match removed.is_empty() {
                true => "No hook was installed.\n".to_owned(),
                false => removed.iter().map(|path| format!("Removed {}\n", path.display())).collect(),
            })
        }
        HookAction::Run => {
            // Never fails apt: every error is logged and the exit status is 0.
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("jailprov"));
            if let Err(error) = hook::run(&args.state.state_dir, &exe, &mut |outcome| hook::syslog(&outcome.line())) {
                hook::syslog(&format!("error: {error:#}"));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
