//! The loader's checks before a program starts, beyond finding its files: symbol versions
//! ("version `VER_2' not found") and undefined symbols ("symbol lookup error"). Each test builds
//! its fixture with gcc, asks the real loader what happens (running the fixture, or `ldd -r`),
//! and holds jailprov's verdict (`closure`, `plan`) against it. jailprov itself runs nothing.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

#[macro_use]
mod cli;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A fresh directory holding a Jailfile and the fixtures one test builds.
struct Fixture {
    workspace: cli::Workspace,
}

impl Fixture {
    fn new() -> Fixture {
        let workspace = cli::Workspace::new("jailprov-symbols-");
        fs::create_dir_all(&workspace.dir).expect("workspace dir");
        Fixture { workspace }
    }

    /// The canonical path of `relative` in the fixture (closure paths are canonical).
    fn path(&self, relative: &str) -> PathBuf {
        fs::canonicalize(&self.workspace.dir).expect("canonical tempdir").join(relative)
    }

    fn write(&self, relative: &str, content: &str) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("fixture files have a parent")).expect("mkdir");
        fs::write(&path, content).expect("write fixture file");
        path
    }

    /// Runs gcc in the fixture directory; the build must work (without gcc, the test fails
    /// naming its package).
    fn gcc(&self, args: &[&str]) {
        cli::prerequisites::require(&cli::prerequisites::GCC);
        let output = Command::new("gcc").args(args).current_dir(self.path("")).output().expect("gcc runs");
        assert!(output.status.success(), "gcc {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }

    /// A shared library `dir/libNAME.so` (soname libNAME.so) from `source`, with a version
    /// script if given.
    fn library(&self, dir: &str, name: &str, source: &str, version_script: Option<&str>) -> PathBuf {
        fs::create_dir_all(self.path(dir)).expect("mkdir");
        let source_path = self.write(&format!("{dir}/{name}.c"), source);
        let out = format!("{dir}/lib{name}.so");
        let soname = format!("-Wl,-soname,lib{name}.so");
        let mut args = vec!["-shared", "-fPIC", "-o", &out, &soname];
        let script;
        if let Some(text) = version_script {
            let script_path = self.write(&format!("{dir}/{name}.map"), text);
            script = format!("-Wl,--version-script={}", script_path.display());
            args.push(&script);
        }
        let source_arg = source_path.display().to_string();
        args.push(&source_arg);
        self.gcc(&args);
        self.path(&out)
    }

    fn jailfile(&self, body: &str) {
        self.workspace.write_jailfile(&format!("root = {:?}\n{body}", cli::UNUSED_ROOT));
    }

    fn closure(&self) -> cli::Run {
        self.host_only("closure", &["--format", "json"])
    }

    /// A command that reads only the host (no `--state-dir`).
    fn host_only(&self, subcommand: &str, extra: &[&str]) -> cli::Run {
        let mut command = Command::new(cli::BIN);
        command.arg(subcommand).arg("-f").arg(&self.workspace.jailfile).arg("--root").arg(&self.workspace.root);
        command.args(extra).current_dir(&self.workspace.dir);
        cli::output(command)
    }
}

/// Runs a fixture program (the loader's own verdict): exit code and stderr.
fn run_program(program: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(program).args(args).output().expect("the fixture program can be spawned");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `ldd -r`'s complaints (undefined symbols, missing versions) about a file.
fn ldd_r(file: &Path) -> Vec<String> {
    let output = Command::new("ldd").arg("-r").arg(file).output().expect("ldd runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    text.lines()
        .filter(|line| line.contains("undefined symbol") || line.contains("not found"))
        .map(str::to_owned)
        .collect()
}

/// The `symbols` verdict of `program` in `closure --format json`.
fn verdict_of(json: &str, program: &Path) -> Value {
    let listing: Value = serde_json::from_str(json).expect("closure --format json is JSON");
    listing["symbols"]
        .as_array()
        .and_then(|verdicts| verdicts.iter().find(|verdict| verdict["program"] == program.display().to_string()))
        .cloned()
        .unwrap_or_else(|| panic!("no symbols verdict for {} in {json}", program.display()))
}

const LIBV_OLD: &str = "int v1(void) { return 1; }\n";
const LIBV_NEW: &str = "int v1(void) { return 1; }\nint v2(void) { return 2; }\n";
const MAP_OLD: &str = "VER_1 { global: v1; local: *; };\n";
const MAP_NEW: &str = "VER_1 { global: v1; local: *; };\nVER_2 { global: v2; } VER_1;\n";

/// prog needs libv.so's VER_2; `old` has only VER_1. Linked against `new`, searched in `order`.
fn versioned_program(fixture: &Fixture, name: &str, order: &[&str]) -> PathBuf {
    fixture.library("old", "v", LIBV_OLD, Some(MAP_OLD));
    let new = fixture.library("new", "v", LIBV_NEW, Some(MAP_NEW));
    fixture.write("prog.c", "int v1(void); int v2(void);\nint main(void) { return v1() + v2() == 3 ? 0 : 1; }\n");
    let rpath: Vec<String> = order.iter().map(|dir| fixture.path(dir).display().to_string()).collect();
    let rpath = format!("-Wl,-rpath,{}", rpath.join(":"));
    let new = new.display().to_string();
    fixture.gcc(&["-o", name, "prog.c", &new, "-Wl,--disable-new-dtags", &rpath]);
    fixture.path(name)
}

/// Asserts that `run` failed like the loader and names everything the user needs.
fn assert_refused_like_the_loader(fixture: &Fixture, command: &str, run: &cli::Run, program: &Path) {
    assert_ne!(run.code, 0, "{command} must fail like the loader: {}", run.describe());
    for needle in [
        &program.display().to_string(),
        &fixture.path("old/libv.so").display().to_string(),
        "version `VER_2' not found",
        &format!("DT_RPATH entry {:?}", fixture.path("old").display().to_string()),
        "that copy defines: VER_1",
        "allow_unresolved",
    ] {
        assert!(run.stderr.contains(needle), "{command} must name {needle:?}: {}", run.describe());
    }
}

#[test]
fn old_library_first_in_rpath_lacking_the_needed_version_is_refused_at_closure() {
    let fixture = Fixture::new();
    let program = versioned_program(&fixture, "prog", &["old", "new"]);
    let old = fixture.path("old/libv.so");

    // The loader's verdict: it picks old/libv.so and refuses to start the program.
    let (code, stderr) = run_program(&program, &[]);
    assert_ne!(code, 0, "the loader must refuse the program: {stderr}");
    assert!(stderr.contains("version `VER_2' not found"), "{stderr}");
    assert!(stderr.contains(&old.display().to_string()), "the loader names the old copy: {stderr}");

    fixture.jailfile(&format!("binaries = [{:?}]\n", program.display().to_string()));
    let run = fixture.host_only("closure", &[]);
    assert_refused_like_the_loader(&fixture, "closure", &run, &program);
}

#[test]
fn old_library_first_in_rpath_lacking_the_needed_version_is_refused_at_plan_and_apply() {
    need_root!("old_library_first_in_rpath_lacking_the_needed_version_is_refused_at_plan_and_apply");
    let fixture = Fixture::new();
    let program = versioned_program(&fixture, "prog", &["old", "new"]);
    fixture.jailfile(&format!("binaries = [{:?}]\n", program.display().to_string()));
    for command in ["plan", "apply"] {
        let run = fixture.workspace.run(command, &[]);
        assert_refused_like_the_loader(&fixture, command, &run, &program);
    }
    assert!(!fixture.workspace.root.exists(), "apply must not build a jail the program cannot start in");
}

#[test]
fn new_library_first_in_rpath_defining_the_needed_version_is_accepted() {
    let fixture = Fixture::new();
    let program = versioned_program(&fixture, "prog", &["new", "old"]);
    let (code, stderr) = run_program(&program, &[]);
    assert_eq!(code, 0, "the loader starts it: {stderr}");

    fixture.jailfile(&format!("binaries = [{:?}]\n", program.display().to_string()));
    let run = fixture.closure().ok("closure of a program the loader starts");
    assert_eq!(verdict_of(&run.stdout, &program)["verdict"], "ok", "{}", run.describe());
    assert!(!run.stderr.contains("warning"), "no false alarm: {}", run.describe());
}

/// The closure cache (src/closure/cache.rs): a warm run says byte for byte what a cold one says,
/// and a library swapped since is judged again (the verdict follows the file, not the cache).
#[test]
fn a_warm_closure_says_what_a_cold_one_says_and_a_swapped_library_is_judged_again() {
    let fixture = Fixture::new();
    let program = versioned_program(&fixture, "prog", &["new", "old"]);
    fixture.jailfile(&format!(
        "binaries = [{:?}, \"/usr/bin/iconv\", \"/usr/bin/date\"]\n",
        program.display().to_string()
    ));
    let state = fixture.path("state");
    fs::create_dir(&state).expect("mkdir the state directory");
    fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    let cache_file = state.join("closure-cache/objects.bin");
    let closure = |no_cache: &str| {
        let mut command = Command::new(cli::BIN);
        command.args(["closure", "--format", "json", "-f"]).arg(&fixture.workspace.jailfile);
        command.arg("--state-dir").arg(&state).env("JAILPROV_NO_CACHE", no_cache);
        cli::output(command)
    };

    let cold = closure("1").ok("a cold closure");
    assert!(!cache_file.exists(), "JAILPROV_NO_CACHE=1 writes no cache");
    let first = closure("").ok("the closure that fills the cache");
    assert!(cache_file.exists(), "a state directory that exists gets the cache");
    let written = fs::metadata(&cache_file).expect("the cache").ino();
    let warm = closure("").ok("a warm closure");
    // Every answer came from the cache: nothing new was learned, so nothing was rewritten.
    assert_eq!(fs::metadata(&cache_file).expect("the cache").ino(), written, "a warm run rewrites no cache");
    for run in [&first, &warm] {
        assert_eq!(run.stdout, cold.stdout, "the cache changes nothing of the listing");
        assert_eq!(run.stderr, cold.stderr, "nor of the warnings");
    }

    // new/libv.so becomes a copy of the old one (VER_1 only): a new inode, the same path.
    let swapped = fixture.path("new/libv.so.swapped");
    fs::copy(fixture.path("old/libv.so"), &swapped).expect("copy the old library");
    fs::rename(&swapped, fixture.path("new/libv.so")).expect("swap the library");
    let (code, stderr) = run_program(&program, &[]);
    assert_ne!(code, 0, "the loader now refuses the program: {stderr}");
    let run = closure("");
    assert_ne!(run.code, 0, "the warm closure refuses it too: {}", run.describe());
    assert!(run.stderr.contains("version `VER_2' not found"), "{}", run.describe());
}

/// Defines VER_2 (so the version check passes) but puts v2 at VER_1 and v1 at VER_2.
const MAP_SWAPPED: &str = "VER_1 { global: v2; local: *; };\nVER_2 { global: v1; } VER_1;\n";

#[test]
fn symbol_defined_only_at_another_version_is_unresolved() {
    let fixture = Fixture::new();
    fixture.library("swapped", "v", LIBV_NEW, Some(MAP_SWAPPED));
    let new = fixture.library("new", "v", LIBV_NEW, Some(MAP_NEW)).display().to_string();
    fixture.write("prog.c", "int v1(void); int v2(void);\nint main(void) { return v1() + v2() == 3 ? 0 : 1; }\n");
    let rpath = format!("-Wl,-rpath,{}", fixture.path("swapped").display());
    fixture.gcc(&["-o", "prog", "prog.c", &new, "-Wl,--disable-new-dtags", &rpath, "-Wl,-z,now"]);
    let program = fixture.path("prog");
    // The loader's verdict: the copy defines VER_2, but not v2 at VER_2.
    let (code, stderr) = run_program(&program, &[]);
    assert_ne!(code, 0, "the loader refuses it: {stderr}");
    assert!(stderr.contains("undefined symbol: v"), "{stderr}");

    fixture.jailfile(&format!("binaries = [{:?}]\n", program.display().to_string()));
    let run = fixture.closure();
    assert_ne!(run.code, 0, "closure must fail like the loader: {}", run.describe());
    assert!(run.stderr.contains("undefined symbol `v2', version VER_2"), "{}", run.describe());
    assert!(!run.stderr.contains("not found in"), "every needed version is defined: {}", run.describe());
}

const LIBF_FULL: &str = "int present(void) { return 0; }\nint gone(void) { return 7; }\n";
const LIBF_STUB: &str = "int present(void) { return 0; }\n";
/// Calls `gone` only when given an argument: started lazily, it runs until that call.
const PROG_F: &str = "int present(void); int gone(void);\n\
                      int main(int argc, char **argv) { (void)argv; return argc > 1 ? gone() : present(); }\n";

/// prog linked against full/libf.so (which has `gone`), but its RPATH finds stub/ first.
fn program_missing_a_function(fixture: &Fixture, binding: &str) -> PathBuf {
    let full = fixture.library("full", "f", LIBF_FULL, None);
    fixture.library("stub", "f", LIBF_STUB, None);
    fixture.write("prog.c", PROG_F);
    let rpath = format!("-Wl,-rpath,{}", fixture.path("stub").display());
    let full = full.display().to_string();
    let binding = format!("-Wl,-z,{binding}");
    fixture.gcc(&["-o", "prog", "prog.c", &full, "-Wl,--disable-new-dtags", &rpath, &binding]);
    fixture.path("prog")
}

#[test]
fn bind_now_program_whose_rpath_copy_lacks_a_function_is_refused() {
    let fixture = Fixture::new();
    let program = program_missing_a_function(&fixture, "now");
    let (code, stderr) = run_program(&program, &[]);
    assert_ne!(code, 0, "the loader refuses it before main: {stderr}");
    assert!(stderr.contains("undefined symbol: gone"), "{stderr}");

    fixture.jailfile(&format!("binaries = [{:?}]\n", program.display().to_string()));
    let run = fixture.closure();
    assert_ne!(run.code, 0, "closure must fail like the loader: {}", run.describe());
    for needle in ["undefined symbol `gone'", "linked -z now", &program.display().to_string()] {
        assert!(run.stderr.contains(needle), "closure must name {needle:?}: {}", run.describe());
    }
    assert!(!run.stderr.contains("`present'"), "present is defined by the stub: {}", run.describe());
}

#[test]
fn allow_unresolved_lowers_the_bind_now_error_to_a_warning() {
    let fixture = Fixture::new();
    let program = program_missing_a_function(&fixture, "now");
    fixture
        .jailfile(&format!("binaries = [{{ name = {:?}, allow_unresolved = true }}]\n", program.display().to_string()));
    let run = fixture.closure().ok("allow_unresolved lowers the error");
    assert!(run.stderr.contains("warning:") && run.stderr.contains("`gone'"), "{}", run.describe());
    let verdict = verdict_of(&run.stdout, &program);
    assert_eq!(verdict["verdict"], "warning", "{verdict}");
    assert_eq!(verdict["allow_unresolved"], true, "{verdict}");
    assert_eq!(verdict["unresolved_symbols"][0]["symbol"], "gone", "{verdict}");
    assert_eq!(verdict["unresolved_symbols"][0]["severity"], "error", "{verdict}");
}

#[test]
fn lazily_bound_program_whose_rpath_copy_lacks_a_function_is_a_warning() {
    let fixture = Fixture::new();
    let program = program_missing_a_function(&fixture, "lazy");
    // The loader starts it; it dies at the first call of the missing function.
    let (code, stderr) = run_program(&program, &[]);
    assert_eq!(code, 0, "a lazy program starts: {stderr}");
    let (code, stderr) = run_program(&program, &["call-gone"]);
    assert_ne!(code, 0, "and fails at the call: {stderr}");
    assert!(stderr.contains("undefined symbol: gone"), "{stderr}");
    assert!(ldd_r(&program).iter().any(|line| line.contains("undefined symbol: gone")), "ldd -r agrees");

    fixture.jailfile(&format!("binaries = [{:?}]\n", program.display().to_string()));
    let run = fixture.closure().ok("a lazily bound miss does not stop the jail");
    assert!(
        run.stderr.contains("warning:") && run.stderr.contains("`gone'") && run.stderr.contains("bound lazily"),
        "the warning names the symbol and the object: {}",
        run.describe()
    );
    let verdict = verdict_of(&run.stdout, &program);
    assert_eq!(verdict["verdict"], "warning", "{verdict}");
    let unresolved = &verdict["unresolved_symbols"];
    assert_eq!(unresolved.as_array().map(Vec::len), Some(1), "{verdict}");
    assert_eq!(unresolved[0]["symbol"], "gone");
    assert_eq!(unresolved[0]["object"], program.display().to_string());
    assert_eq!(unresolved[0]["severity"], "warning");
}

#[test]
fn weak_undefined_symbol_is_no_finding() {
    let fixture = Fixture::new();
    let stub = fixture.library("stub", "f", LIBF_STUB, None);
    fixture.write(
        "prog.c",
        "int present(void); extern int maybe(void) __attribute__((weak));\n\
         int main(void) { return (maybe ? maybe() : 0) + present(); }\n",
    );
    let rpath = format!("-Wl,-rpath,{}", fixture.path("stub").display());
    let stub = stub.display().to_string();
    fixture.gcc(&["-o", "prog", "prog.c", &stub, &rpath, "-Wl,-z,now"]);
    let program = fixture.path("prog");
    let (code, stderr) = run_program(&program, &[]);
    assert_eq!(code, 0, "the loader starts it, maybe = NULL: {stderr}");
    assert!(ldd_r(&program).is_empty(), "ldd -r finds nothing: {:?}", ldd_r(&program));

    fixture.jailfile(&format!("binaries = [{:?}]\n", program.display().to_string()));
    let run = fixture.closure().ok("a weak reference may stay undefined");
    assert_eq!(verdict_of(&run.stdout, &program)["verdict"], "ok", "{}", run.describe());
    assert!(!run.stderr.contains("maybe"), "{}", run.describe());
}

#[test]
fn plugin_in_files_using_its_programs_symbols_is_no_finding() {
    let fixture = Fixture::new();
    // The plugin calls host_api(), which only the program that dlopens it defines.
    fixture.write("plugins/plugin.c", "int host_api(void);\nint plugin_entry(void) { return host_api() - 42; }\n");
    fixture.gcc(&["-shared", "-fPIC", "-o", "plugins/plugin.so", "plugins/plugin.c"]);
    let plugin = fixture.path("plugins/plugin.so");
    fixture.write(
        "prog.c",
        "#include <dlfcn.h>\n\
         int host_api(void) { return 42; }\n\
         int main(int argc, char **argv) {\n\
           (void)argc; void *h = dlopen(argv[1], RTLD_NOW); if (!h) return 2;\n\
           int (*entry)(void) = (int (*)(void))dlsym(h, \"plugin_entry\"); return entry ? entry() : 3; }\n",
    );
    fixture.gcc(&["-o", "prog", "prog.c", "-rdynamic", "-ldl", "-Wl,-z,now"]);
    let program = fixture.path("prog");
    let plugin_arg = plugin.display().to_string();
    let (code, stderr) = run_program(&program, &[&plugin_arg]);
    assert_eq!(code, 0, "the program loads its plugin and the plugin finds host_api: {stderr}");
    // On its own the plugin has an undefined symbol: a naive check would cry wolf.
    assert!(ldd_r(&plugin).iter().any(|line| line.contains("host_api")), "{:?}", ldd_r(&plugin));

    fixture.jailfile(&format!(
        "binaries = [{:?}]\n[[files]]\nsrc = {:?}\n",
        program.display().to_string(),
        fixture.path("plugins").display().to_string()
    ));
    let run = fixture.closure().ok("a plugin beside its program");
    assert_eq!(verdict_of(&run.stdout, &program)["verdict"], "ok", "{}", run.describe());
    assert!(!run.stderr.contains("host_api"), "nothing about the plugin: {}", run.describe());
    let listing: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let judged: Vec<&Value> = listing["symbols"].as_array().map(|all| all.iter().collect()).unwrap_or_default();
    assert!(
        judged.iter().all(|verdict| verdict["program"] != plugin.display().to_string()),
        "the plugin is not started, so not judged: {judged:?}"
    );
}

#[test]
fn python_with_its_extension_modules_in_files_is_no_finding() {
    let fixture = Fixture::new();
    let example = fs::canonicalize("examples/python/Jailfile.toml").expect("the shipped python example");
    let jailfile = fs::read_to_string(&example).expect("read the example");
    fixture.workspace.write_jailfile(&jailfile);
    let run = fixture.closure().ok("closure of the shipped python example");
    let listing: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let verdicts = listing["symbols"].as_array().expect("python is judged");
    assert!(!verdicts.is_empty() && verdicts.iter().all(|verdict| verdict["verdict"] == "ok"), "{verdicts:?}");
    // lib-dynload's modules leave Python's C API undefined: they are loaded, not started.
    assert!(!run.stderr.contains("undefined symbol") && !run.stderr.contains("version `"), "{}", run.describe());
}

#[test]
fn binary_table_with_an_unknown_key_is_refused_and_the_known_ones_validate() {
    let fixture = Fixture::new();
    fixture.jailfile("binaries = [\"sh\", { name = \"bash\", allow_unresolved = true }]\n");
    fixture.host_only("validate", &[]).ok("a binaries table with name and allow_unresolved");
    fixture.jailfile("binaries = [{ name = \"bash\", allow_unresolvd = true }]\n");
    let run = fixture.host_only("validate", &[]);
    assert_ne!(run.code, 0, "a typo must not silently keep the error: {}", run.describe());
    assert!(run.stderr.contains("allow_unresolvd"), "{}", run.describe());
}
