//! One test per search rule of glibc 2.36's dynamic loader (Debian 12, x86_64), each on tiny
//! fixtures built with gcc in a fresh tempdir. Every test asserts the exact closure the loader
//! under test computes (each object's name, path and needing object, in load order, and the
//! missing libraries) and, wherever the host's real loader can answer, that the real loader
//! lists exactly the same thing (which also proves the hand-written expectations right).
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use jailprov::closure::loader::LoaderOptions;
use support::*;

fn fixture() -> Fixture {
    Fixture::new().expect("create fixture tempdir")
}

fn hwcaps_options(hwcaps: &[&str]) -> LoaderOptions {
    LoaderOptions { hwcaps: Some(hwcaps.iter().map(|h| h.to_string()).collect()), ..host_options() }
}

// --- 1. RPATH vs RUNPATH on the executable -----------------------------------------------------

#[test]
fn rpath_dirs_are_searched_in_order_before_cache_and_system_dirs() {
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let d2 = fx.dir("d2").expect("mkdir d2");
    let foo1 = build_lib(&d1, "libfoo.so.1", &[], &[]).expect("build d1/libfoo");
    build_lib(&d2, "libfoo.so.1", &[], &[]).expect("build d2/libfoo");
    // A copy of a library that ld.so.cache and the system dirs also have: the RPATH copy wins.
    let z1 = d1.join("libz.so.1");
    fs::copy("/lib/x86_64-linux-gnu/libz.so.1", &z1).expect("copy libz.so.1 into d1");

    let with_z = |mut flags: Vec<String>| {
        flags.push(s(&z1).to_string()); // linked without calling into it
        flags
    };
    let exe12 = build_exe(&fx.root().join("exe12"), &[&foo1], &with_z(rpath(&[s(&d1), s(&d2)]))).expect("build exe12");
    let result = load_host(&exe12);
    assert_closure(
        &result,
        &[
            obj("libfoo.so.1", d1.join("libfoo.so.1"), &exe12),
            obj("libz.so.1", d1.join("libz.so.1"), &exe12),
            libc(&exe12),
        ],
        &[],
    );
    assert_matches_reference(&result, &exe12);

    let exe21 = build_exe(&fx.root().join("exe21"), &[&foo1], &with_z(rpath(&[s(&d2), s(&d1)]))).expect("build exe21");
    let result = load_host(&exe21);
    assert_closure(
        &result,
        &[
            obj("libfoo.so.1", d2.join("libfoo.so.1"), &exe21),
            obj("libz.so.1", d1.join("libz.so.1"), &exe21),
            libc(&exe21),
        ],
        &[],
    );
    assert_matches_reference(&result, &exe21);
}

#[test]
fn runpath_on_executable_disables_its_rpath() {
    let fx = fixture();
    let d1 = fx.dir("rpath").expect("mkdir rpath");
    let d2 = fx.dir("runpath").expect("mkdir runpath");
    let foo = build_lib(&d1, "libfoo.so.1", &[], &[]).expect("build rpath/libfoo");
    build_lib(&d2, "libfoo.so.1", &[], &[]).expect("build runpath/libfoo");
    let only1 = build_lib(&d1, "libjponlyrpath.so.1", &[], &[]).expect("build libjponlyrpath");

    // RUNPATH=d2 from ld; DT_SONAME=d1 retagged into DT_RPATH=d1 (ld no longer emits both).
    let mut flags = runpath(&[s(&d2)]);
    flags.push(format!("-Wl,-soname,{}", d1.display()));
    let exe = build_exe(&fx.root().join("exe"), &[&foo, &only1], &flags).expect("build exe");
    retag_dynamic(&exe, DT_SONAME, DT_RPATH).expect("retag DT_SONAME -> DT_RPATH");
    let tags = dynamic_tags(&exe).expect("read dynamic tags");
    assert!(tags.contains(&DT_RPATH) && tags.contains(&DT_RUNPATH), "{tags:x?}");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[obj("libfoo.so.1", d2.join("libfoo.so.1"), &exe), libc(&exe)],
        &[miss("libjponlyrpath.so.1", &[&exe])],
    );
    let searched = &result.missing[0].searched;
    assert!(!searched.contains(&d1), "RPATH dir searched: {searched:?}");
    assert_searched_in_order(searched, &[&d2]);
    assert_matches_reference(&result, &exe);
}

// --- 2. RUNPATH is not inherited -----------------------------------------------------------------

#[test]
fn runpath_is_not_inherited_by_dependencies() {
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let libb = build_lib(&d1, "libjprunpathb.so.1", &[], &[]).expect("build libb");
    let liba = build_lib(&d1, "libjprunpatha.so.1", &[&libb], &[]).expect("build liba");
    let exe = build_exe(&fx.root().join("exe"), &[&liba], &runpath(&[s(&d1)])).expect("build exe");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[obj("libjprunpatha.so.1", &liba, &exe), libc(&exe)],
        &[miss("libjprunpathb.so.1", &[&exe, &liba])],
    );
    let searched = &result.missing[0].searched;
    assert!(!searched.contains(&d1), "exe's RUNPATH inherited: {searched:?}");
    assert_searched_in_order(searched, &system_dirs());
    assert_matches_reference(&result, &exe);
}

// --- 3. RPATH is inherited up the loading chain ------------------------------------------------

#[test]
fn rpath_of_executable_is_inherited_by_dependencies() {
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let libb = build_lib(&d1, "libjprpathb.so.1", &[], &[]).expect("build libb");
    let liba = build_lib(&d1, "libjprpatha.so.1", &[&libb], &[]).expect("build liba");
    let exe = build_exe(&fx.root().join("exe"), &[&liba], &rpath(&[s(&d1)])).expect("build exe");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[obj("libjprpatha.so.1", &liba, &exe), libc(&exe), obj("libjprpathb.so.1", &libb, &liba)],
        &[],
    );
    assert_matches_reference(&result, &exe);
}

#[test]
fn rpath_of_every_object_up_the_chain_is_searched() {
    // exe (RPATH d1) -> liba (in d1, RPATH d2) -> libb (in d2, no paths)
    //   -> libc3 (only in d2: found through liba's RPATH, the middle of the chain)
    //   -> libd4 (only in d1: found through the executable's RPATH, the top of the chain)
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let d2 = fx.dir("d2").expect("mkdir d2");
    let libc3 = build_lib(&d2, "libjpchainc.so.1", &[], &[]).expect("build libc3");
    let libd4 = build_lib(&d1, "libjpchaind.so.1", &[], &[]).expect("build libd4");
    let libb = build_lib(&d2, "libjpchainb.so.1", &[&libc3, &libd4], &[]).expect("build libb");
    let liba = build_lib(&d1, "libjpchaina.so.1", &[&libb], &rpath(&[s(&d2)])).expect("build liba");
    let exe = build_exe(&fx.root().join("exe"), &[&liba], &rpath(&[s(&d1)])).expect("build exe");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[
            obj("libjpchaina.so.1", &liba, &exe),
            libc(&exe),
            obj("libjpchainb.so.1", &libb, &liba),
            obj("libjpchainc.so.1", &libc3, &libb),
            obj("libjpchaind.so.1", &libd4, &libb),
        ],
        &[],
    );
    assert_matches_reference(&result, &exe);
}

#[test]
fn rpath_inheritance_passes_over_runpath_objects_but_not_into_them() {
    // exe (RPATH d1) -> libm1 (in d1, RUNPATH d3)
    //   libm1 -> libn (in d3: libm1's RUNPATH)  -> libo (only in d1: libn has no RUNPATH, so the
    //            RPATHs up its chain count; libm1's chain link has none, the exe's has d1)
    //   libm1 -> libp (only in d1: libm1 has a RUNPATH, so no RPATH at all is used) => missing
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let d3 = fx.dir("d3").expect("mkdir d3");
    let libo = build_lib(&d1, "libjpmixo.so.1", &[], &[]).expect("build libo");
    let libp = build_lib(&d1, "libjpmixp.so.1", &[], &[]).expect("build libp");
    let libn = build_lib(&d3, "libjpmixn.so.1", &[&libo], &[]).expect("build libn");
    let libm1 = build_lib(&d1, "libjpmixm.so.1", &[&libn, &libp], &runpath(&[s(&d3)])).expect("build libm1");
    let exe = build_exe(&fx.root().join("exe"), &[&libm1], &rpath(&[s(&d1)])).expect("build exe");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[
            obj("libjpmixm.so.1", &libm1, &exe),
            libc(&exe),
            obj("libjpmixn.so.1", &libn, &libm1),
            obj("libjpmixo.so.1", &libo, &libn),
        ],
        &[miss("libjpmixp.so.1", &[&exe, &libm1])],
    );
    let searched = &result.missing[0].searched;
    assert!(!searched.contains(&d1), "RPATH used for a RUNPATH object: {searched:?}");
    assert_searched_in_order(searched, &[&d3]);
    assert_matches_reference(&result, &exe);
}

// --- 4. $ORIGIN, $LIB, $PLATFORM -----------------------------------------------------------------

#[test]
fn origin_expands_to_the_directory_of_each_object() {
    // bin/exe   RPATH   $ORIGIN/../lib      -> lib/liba.so.1
    // bin/exe2  RUNPATH ${ORIGIN}/../lib    -> lib/liba.so.1
    // lib/liba  RPATH   $ORIGIN/sub         -> lib/sub/libb.so.1 (relative to liba, not the exe)
    // lib/liba  RPATH   ${ORIGIN}/sub2      -> lib/sub2/libc2.so.1
    let fx = fixture();
    let bin = fx.dir("bin").expect("mkdir bin");
    let lib = fx.dir("lib").expect("mkdir lib");
    let libb = build_lib(&lib.join("sub"), "libjporiginb.so.1", &[], &[]).expect("build libb");
    let libc2 = build_lib(&lib.join("sub2"), "libjporiginc.so.1", &[], &[]).expect("build libc2");
    let liba = build_lib(&lib, "libjporigina.so.1", &[&libb, &libc2], &rpath(&["$ORIGIN/sub", "${ORIGIN}/sub2"]))
        .expect("build liba");
    let exe = build_exe(&bin.join("exe"), &[&liba], &rpath(&["$ORIGIN/../lib"])).expect("build exe");
    let exe2 = build_exe(&bin.join("exe2"), &[&liba], &runpath(&["${ORIGIN}/../lib"])).expect("build exe2");

    // glibc does not normalise "..": the paths are spelled as the expanded search dirs.
    let via_bin = bin.join("../lib");
    let result = load_host(&exe);
    assert_closure(
        &result,
        &[
            obj("libjporigina.so.1", via_bin.join("libjporigina.so.1"), &exe),
            libc(&exe),
            obj("libjporiginb.so.1", via_bin.join("sub/libjporiginb.so.1"), via_bin.join("libjporigina.so.1")),
            obj("libjporiginc.so.1", via_bin.join("sub2/libjporiginc.so.1"), via_bin.join("libjporigina.so.1")),
        ],
        &[],
    );
    assert_matches_reference(&result, &exe);

    let result = load_host(&exe2);
    assert_closure(
        &result,
        &[
            obj("libjporigina.so.1", via_bin.join("libjporigina.so.1"), &exe2),
            libc(&exe2),
            obj("libjporiginb.so.1", via_bin.join("sub/libjporiginb.so.1"), via_bin.join("libjporigina.so.1")),
            obj("libjporiginc.so.1", via_bin.join("sub2/libjporiginc.so.1"), via_bin.join("libjporigina.so.1")),
        ],
        &[],
    );
    assert_matches_reference(&result, &exe2);
}

#[test]
fn origin_of_the_executable_is_its_canonical_directory() {
    // real/bin/exe (RPATH $ORIGIN/../lib) run through the symlink link/exe: the kernel-started
    // loader takes $ORIGIN from /proc/self/exe, i.e. real/bin, not link/.
    let fx = fixture();
    let bin = fx.dir("real/bin").expect("mkdir real/bin");
    let lib = fx.dir("real/lib").expect("mkdir real/lib");
    let link_dir = fx.dir("link").expect("mkdir link");
    let liba = build_lib(&lib, "libjpcanon.so.1", &[], &[]).expect("build liba");
    let exe = build_exe(&bin.join("exe"), &[&liba], &rpath(&["$ORIGIN/../lib"])).expect("build exe");
    let link = link_dir.join("exe");
    symlink(&exe, &link).expect("symlink link/exe -> real/bin/exe");

    let result = load_host(&link);
    let found = bin.join("../lib/libjpcanon.so.1");
    assert_eq!(
        result.objects.iter().map(|o| (o.name.as_str(), o.path.as_path())).collect::<Vec<_>>(),
        vec![("libjpcanon.so.1", found.as_path()), ("libc.so.6", Path::new(LIBC_PATH))],
        "{}",
        describe(&result)
    );
    assert!(result.missing.is_empty(), "{}", describe(&result));
    let reference = reference_listing_via_kernel(&link).expect("reference listing via kernel");
    assert_matches_listing(&result, &reference, &link);
}

#[test]
fn lib_token_expands_to_the_debian_multiarch_dir() {
    let fx = fixture();
    let multiarch = fx.dir("lib/x86_64-linux-gnu").expect("mkdir lib/x86_64-linux-gnu");
    let liba = build_lib(&multiarch, "libjplibtoken.so.1", &[], &[]).expect("build liba");
    let libb = build_lib(&multiarch, "libjplibtokenb.so.1", &[], &[]).expect("build libb");
    let root = s(fx.root()).to_string();

    let exe = build_exe(&fx.root().join("exe"), &[&liba], &runpath(&[&format!("{root}/$LIB")])).expect("build exe");
    let result = load_host(&exe);
    assert_closure(&result, &[obj("libjplibtoken.so.1", &liba, &exe), libc(&exe)], &[]);
    assert_matches_reference(&result, &exe);

    let exe2 =
        build_exe(&fx.root().join("exe2"), &[&libb], &rpath(&[&format!("{root}/${{LIB}}")])).expect("build exe2");
    let result = load_host(&exe2);
    assert_closure(&result, &[obj("libjplibtokenb.so.1", &libb, &exe2), libc(&exe2)], &[]);
    assert_matches_reference(&result, &exe2);
}

#[test]
fn platform_token_expands_to_the_platform() {
    let fx = fixture();
    let platform = host_platform();
    let host_dir = fx.dir(&format!("plat/{platform}")).expect("mkdir plat/<host platform>");
    let custom_dir = fx.dir("plat/jp-test-platform").expect("mkdir plat/jp-test-platform");
    let lib = build_lib(&host_dir, "libjpplatform.so.1", &[], &[]).expect("build host lib");
    build_lib(&custom_dir, "libjpplatform.so.1", &[], &[]).expect("build custom lib");
    let exe = build_exe(&fx.root().join("exe"), &[&lib], &rpath(&[&format!("{}/plat/$PLATFORM", s(fx.root()))]))
        .expect("build exe");

    // Detected platform: what the real loader of this CPU uses (e.g. "haswell").
    let result = load_host(&exe);
    assert_closure(&result, &[obj("libjpplatform.so.1", host_dir.join("libjpplatform.so.1"), &exe), libc(&exe)], &[]);
    assert_matches_reference(&result, &exe);

    // Given platform.
    let options = LoaderOptions { platform: Some("jp-test-platform".into()), ..host_options() };
    let result = load(options, &exe);
    assert_closure(&result, &[obj("libjpplatform.so.1", custom_dir.join("libjpplatform.so.1"), &exe), libc(&exe)], &[]);
}

// --- 5. glibc-hwcaps subdirectories ------------------------------------------------------------

#[test]
fn glibc_hwcaps_subdirs_are_tried_best_first_before_the_dir() {
    let fx = fixture();
    let dir = fx.dir("h").expect("mkdir h");
    let plain = build_lib(&dir, "libjphwcaps.so.1", &[], &[]).expect("build plain lib");
    let v2 = build_lib(&dir.join("glibc-hwcaps/x86-64-v2"), "libjphwcaps.so.1", &[], &[]).expect("build v2 lib");
    let v3 = build_lib(&dir.join("glibc-hwcaps/x86-64-v3"), "libjphwcaps.so.1", &[], &[]).expect("build v3 lib");
    let exe = build_exe(&fx.root().join("exe"), &[&plain], &rpath(&[s(&dir)])).expect("build exe");
    let host = host_hwcaps().expect("hwcaps of this CPU from ld.so --help");

    let cases: [(&[&str], &PathBuf); 3] = [(&["x86-64-v3", "x86-64-v2"], &v3), (&["x86-64-v2"], &v2), (&[], &plain)];
    for (hwcaps, expected) in cases {
        let result = load(hwcaps_options(hwcaps), &exe);
        assert_closure(&result, &[obj("libjphwcaps.so.1", expected, &exe), libc(&exe)], &[]);
        // The real loader agrees when told to search only these (if this CPU supports them).
        if hwcaps.iter().all(|h| host.iter().any(|s| s == h)) {
            let mask = hwcaps.join(":");
            assert_matches_reference_with(&result, &exe, &["--glibc-hwcaps-mask", &mask]);
        }
    }

    // Detected from this CPU: the best of v3/v2 the real loader supports, and agreement with it.
    let expected = ["x86-64-v3", "x86-64-v2"]
        .into_iter()
        .find(|h| host.iter().any(|s| s == h))
        .map_or(plain.clone(), |h| dir.join("glibc-hwcaps").join(h).join("libjphwcaps.so.1"));
    let result = load_host(&exe);
    assert_closure(&result, &[obj("libjphwcaps.so.1", expected, &exe), libc(&exe)], &[]);
    assert_matches_reference(&result, &exe);
}

#[test]
fn legacy_hwcap_subdirs_are_tried_after_glibc_hwcaps_before_the_dir() {
    // glibc 2.36 (removed in 2.37) still tries the legacy HWCAP subdirectories that
    // `ld.so --help` lists under "Legacy HWCAP subdirectories" (here: tls, the platform,
    // avx512_1, x86_64 and their combinations) after DIR/glibc-hwcaps/* and before DIR.
    // "tls" and "x86_64" are searched on every x86_64 CPU, with "tls" first.
    let fx = fixture();
    let dir = fx.dir("h").expect("mkdir h");
    let plain = build_lib(&dir, "libjplegacy.so.1", &[], &[]).expect("build plain lib");
    let x86_64 = build_lib(&dir.join("x86_64"), "libjplegacy.so.1", &[], &[]).expect("build x86_64 lib");
    let tls = build_lib(&dir.join("tls"), "libjplegacy.so.1", &[], &[]).expect("build tls lib");
    let exe = build_exe(&fx.root().join("exe"), &[&plain], &rpath(&[s(&dir)])).expect("build exe");

    let result = load_host(&exe);
    assert_closure(&result, &[obj("libjplegacy.so.1", &tls, &exe), libc(&exe)], &[]);
    assert_matches_reference(&result, &exe);

    fs::remove_dir_all(dir.join("tls")).expect("remove h/tls");
    let result = load_host(&exe);
    assert_closure(&result, &[obj("libjplegacy.so.1", &x86_64, &exe), libc(&exe)], &[]);
    assert_matches_reference(&result, &exe);

    // A glibc-hwcaps subdir still beats them.
    let v2 = build_lib(&dir.join("glibc-hwcaps/x86-64-v2"), "libjplegacy.so.1", &[], &[]).expect("build v2 lib");
    let result = load(hwcaps_options(&["x86-64-v2"]), &exe);
    assert_closure(&result, &[obj("libjplegacy.so.1", &v2, &exe), libc(&exe)], &[]);
}

// --- 6. wrong ELF class / machine ----------------------------------------------------------------

#[test]
fn objects_of_wrong_class_or_machine_are_skipped() {
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let d2 = fx.dir("d2").expect("mkdir d2");
    let d3 = fx.dir("d3").expect("mkdir d3");
    let d4 = fx.dir("d4").expect("mkdir d4");
    let good = build_lib(&d4, "libjpclass.so.1", &[], &[]).expect("build good lib");
    // d1: a real 32-bit build (gcc-multilib; missing, the test fails naming it).
    build_lib_m32(&d1.join("libjpclass.so.1"), "libjpclass.so.1").expect("build 32-bit lib");
    // d2: EI_CLASS patched to ELFCLASS32; d3: e_machine patched to EM_AARCH64 (183).
    copy_patched(&good, &d2.join("libjpclass.so.1"), 4, &[1]).expect("patch EI_CLASS");
    copy_patched(&good, &d3.join("libjpclass.so.1"), 18, &183u16.to_le_bytes()).expect("patch e_machine");
    let exe =
        build_exe(&fx.root().join("exe"), &[&good], &rpath(&[s(&d1), s(&d2), s(&d3), s(&d4)])).expect("build exe");

    let result = load_host(&exe);
    assert_closure(&result, &[obj("libjpclass.so.1", &good, &exe), libc(&exe)], &[]);
    assert_matches_reference(&result, &exe);
}

// --- 7. missing libraries ------------------------------------------------------------------------

#[test]
fn missing_library_is_reported_with_chain_and_searched_dirs() {
    // exe (RPATH d1) -> liba (d1)      -> libgone (nowhere)  => missing, chain exe -> liba
    //                                  -> libb (d1)          => found
    //                -> libgonedirect (nowhere)              => missing, chain exe
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let stage = fx.dir("stage").expect("mkdir stage");
    let gone = build_lib(&stage, "libjpgone.so.1", &[], &[]).expect("build libgone");
    let gone_direct = build_lib(&stage, "libjpgonedirect.so.1", &[], &[]).expect("build libgonedirect");
    let libb = build_lib(&d1, "libjpmissb.so.1", &[], &[]).expect("build libb");
    let liba = build_lib(&d1, "libjpmissa.so.1", &[&gone, &libb], &[]).expect("build liba");
    let exe = build_exe(&fx.root().join("exe"), &[&liba, &gone_direct], &rpath(&[s(&d1)])).expect("build exe");
    fs::remove_dir_all(&stage).expect("remove stage");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[obj("libjpmissa.so.1", &liba, &exe), libc(&exe), obj("libjpmissb.so.1", &libb, &liba)],
        &[miss("libjpgonedirect.so.1", &[&exe]), miss("libjpgone.so.1", &[&exe, &liba])],
    );
    let mut expected_dirs: Vec<&Path> = vec![&d1];
    expected_dirs.extend(system_dirs());
    for m in &result.missing {
        assert_searched_in_order(&m.searched, &expected_dirs);
        assert!(!m.searched.contains(&stage), "{:?}", m.searched);
    }
    assert_matches_reference(&result, &exe);
}

#[test]
fn missing_name_is_searched_again_by_later_needers() {
    // A name not found for one object is not "loaded": glibc searches it again for every later
    // object that needs it (its trace-mode placeholder for a missing name never matches), and
    // `ld.so --list` prints "not found" once per failed need.
    // exe (RUNPATH d1) -> liba (d1, no paths) -> libjpdup (only in d2): missing
    //                                         -> libjpnever (nowhere): missing
    //                  -> libb (d1, RUNPATH d2) -> libjpdup: found in d2 this time
    //                                           -> libjpnever: missing again
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let d2 = fx.dir("d2").expect("mkdir d2");
    let stage = fx.dir("stage").expect("mkdir stage");
    let dup = build_lib(&d2, "libjpdup.so.1", &[], &[]).expect("build libjpdup");
    let never = build_lib(&stage, "libjpnever.so.1", &[], &[]).expect("build libjpnever");
    let liba = build_lib(&d1, "libjponcea.so.1", &[&dup, &never], &[]).expect("build liba");
    let libb = build_lib(&d1, "libjponceb.so.1", &[&dup, &never], &runpath(&[s(&d2)])).expect("build libb");
    let exe = build_exe(&fx.root().join("exe"), &[&liba, &libb], &runpath(&[s(&d1)])).expect("build exe");
    fs::remove_dir_all(&stage).expect("remove stage");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[
            obj("libjponcea.so.1", &liba, &exe),
            obj("libjponceb.so.1", &libb, &exe),
            libc(&exe),
            obj("libjpdup.so.1", &dup, &libb),
        ],
        &[
            miss("libjpdup.so.1", &[&exe, &liba]),
            miss("libjpnever.so.1", &[&exe, &liba]),
            miss("libjpnever.so.1", &[&exe, &libb]),
        ],
    );
    assert_matches_reference(&result, &exe);
}

// --- 8. one object per soname; path names --------------------------------------------------------

#[test]
fn each_soname_is_loaded_once() {
    // liba <-> libb need each other and libc; liba also needs ld-linux-x86-64.so.2, which the
    // interpreter (DT_SONAME ld-linux-x86-64.so.2) already satisfies.
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let stub_a = build_lib(&d1, "libjpcyclea.so.1", &[], &[]).expect("build stub liba");
    let libb = build_lib(&d1, "libjpcycleb.so.1", &[&stub_a], &[]).expect("build libb");
    let liba = build_lib(&d1, "libjpcyclea.so.1", &[&libb], &[RTLD.to_string()]).expect("build liba");
    let exe = build_exe(&fx.root().join("exe"), &[&liba, &libb], &rpath(&[s(&d1)])).expect("build exe");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[obj("libjpcyclea.so.1", &liba, &exe), obj("libjpcycleb.so.1", &libb, &exe), libc(&exe)],
        &[],
    );
    assert_matches_reference(&result, &exe);
}

#[test]
fn needed_name_with_slash_is_loaded_from_that_path() {
    // exe needs "ROOT/p/libjppath.so" (built without DT_SONAME, linked by full path) and liba;
    // liba needs the same path: loaded once. A same-named file in the RPATH dir is not used.
    let fx = fixture();
    let p = fx.dir("p").expect("mkdir p");
    let d1 = fx.dir("d1").expect("mkdir d1");
    let by_path = build_lib_file(&p.join("libjppath.so"), None, &[], &[]).expect("build p/libjppath.so");
    build_lib_file(&d1.join("libjppath.so"), None, &[], &[]).expect("build d1/libjppath.so");
    let liba = build_lib(&d1, "libjppatha.so.1", &[&by_path], &[]).expect("build liba");
    let exe = build_exe(&fx.root().join("exe"), &[&by_path, &liba], &rpath(&[s(&d1)])).expect("build exe");

    let name = s(&by_path);
    let result = load_host(&exe);
    assert_closure(&result, &[obj(name, &by_path, &exe), obj("libjppatha.so.1", &liba, &exe), libc(&exe)], &[]);
    assert_matches_reference(&result, &exe);
}

#[test]
fn dt_soname_of_a_loaded_object_satisfies_later_needs() {
    // exe needs libjpx.so.1 and then libjpy.so.1. The file d1/libjpx.so.1 that gets loaded has
    // DT_SONAME libjpy.so.1, so the need for libjpy.so.1 is already satisfied: d1/libjpy.so.1
    // (a different file) is never loaded.
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let stage = fx.dir("stage").expect("mkdir stage");
    let stub_x = build_lib(&stage, "libjpx.so.1", &[], &[]).expect("build stub libjpx");
    let liby = build_lib(&d1, "libjpy.so.1", &[], &[]).expect("build libjpy");
    let libx = build_lib_file(&d1.join("libjpx.so.1"), Some("libjpy.so.1"), &[], &[])
        .expect("build d1/libjpx.so.1 with soname libjpy.so.1");
    let exe = build_exe(&fx.root().join("exe"), &[&stub_x, &liby], &rpath(&[s(&d1)])).expect("build exe");
    fs::remove_dir_all(&stage).expect("remove stage");

    let result = load_host(&exe);
    assert_closure(&result, &[obj("libjpx.so.1", &libx, &exe), libc(&exe)], &[]);
    assert_matches_reference(&result, &exe);
}

#[test]
fn same_file_under_another_name_is_loaded_once() {
    // glibc identifies objects by (st_dev, st_ino) as well: exe needs libjpfile.so.1 and liba;
    // liba needs libjpalias.so.1, a symlink to the same file in the same dir, so nothing new is
    // loaded (the real loader lists no line for libjpalias.so.1).
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let stage = fx.dir("stage").expect("mkdir stage");
    let file = build_lib(&d1, "libjpfile.so.1", &[], &[]).expect("build libjpfile");
    let alias_stub = build_lib(&stage, "libjpalias.so.1", &[], &[]).expect("build stub alias");
    let liba = build_lib(&d1, "libjpaliasa.so.1", &[&alias_stub], &[]).expect("build liba");
    symlink("libjpfile.so.1", d1.join("libjpalias.so.1")).expect("symlink alias");
    let exe = build_exe(&fx.root().join("exe"), &[&file, &liba], &rpath(&[s(&d1)])).expect("build exe");
    fs::remove_dir_all(&stage).expect("remove stage");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[obj("libjpfile.so.1", &file, &exe), obj("libjpaliasa.so.1", &liba, &exe), libc(&exe)],
        &[],
    );
    assert_matches_reference(&result, &exe);
}

// --- 9. -z nodeflib --------------------------------------------------------------------------

#[test]
fn nodeflib_executable_uses_neither_system_dirs_nor_their_cache_entries() {
    let fx = fixture();
    let exe = build_exe(&fx.root().join("exe"), &[], &["-lm".into()]).expect("build exe");
    set_flags_1(&exe, DF_1_NODEFLIB).expect("set DF_1_NODEFLIB");

    let result = load_host(&exe);
    assert_closure(&result, &[], &[miss("libm.so.6", &[&exe]), miss("libc.so.6", &[&exe])]);
    for m in &result.missing {
        assert!(
            !m.searched.iter().any(|d| system_dirs().iter().any(|sys| d.starts_with(sys))),
            "{} searched a system dir: {:?}",
            m.name,
            m.searched
        );
    }
    assert_matches_reference(&result, &exe);
}

#[test]
fn nodeflib_executable_still_uses_its_rpath() {
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    for lib in ["libm.so.6", "libc.so.6"] {
        fs::copy(Path::new("/lib/x86_64-linux-gnu").join(lib), d1.join(lib))
            .unwrap_or_else(|e| panic!("copy {lib} into d1: {e}"));
    }
    let exe = build_exe(&fx.root().join("exe"), &[], &{
        let mut f = rpath(&[s(&d1)]);
        f.push("-lm".into());
        f
    })
    .expect("build exe");
    set_flags_1(&exe, DF_1_NODEFLIB).expect("set DF_1_NODEFLIB");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[obj("libm.so.6", d1.join("libm.so.6"), &exe), obj("libc.so.6", d1.join("libc.so.6"), &exe)],
        &[],
    );
    assert_matches_reference(&result, &exe);
}

#[test]
fn nodeflib_applies_to_the_needs_of_the_flagged_object_only() {
    // exe (RPATH d1) -> liba (d1, -z nodeflib) -> libz.so.1: only in system dirs => missing
    //                -> libb (d1)              -> libm.so.6: from ld.so.cache as usual
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let libz = Path::new("/lib/x86_64-linux-gnu/libz.so.1");
    let libm = Path::new("/lib/x86_64-linux-gnu/libm.so.6");
    // GNU ld 2.40 ignores -z nodeflib ("warning: -z nodeflib ignored"): link with -z now for a
    // DT_FLAGS_1 entry, then set DF_1_NODEFLIB in it.
    let liba = build_lib(&d1, "libjpnodefliba.so.1", &[], &["-Wl,-z,now".into(), s(libz).into()]).expect("build liba");
    set_flags_1(&liba, DF_1_NODEFLIB).expect("set DF_1_NODEFLIB on liba");
    let libb = build_lib(&d1, "libjpnodeflibb.so.1", &[], &[s(libm).into()]).expect("build libb");
    let exe = build_exe(&fx.root().join("exe"), &[&liba, &libb], &rpath(&[s(&d1)])).expect("build exe");

    let result = load_host(&exe);
    assert_closure(
        &result,
        &[
            obj("libjpnodefliba.so.1", &liba, &exe),
            obj("libjpnodeflibb.so.1", &libb, &exe),
            libc(&exe),
            obj("libm.so.6", libm, &libb),
        ],
        &[miss("libz.so.1", &[&exe, &liba])],
    );
    assert_matches_reference(&result, &exe);
}

#[test]
fn nodeflib_rejects_cache_hits_anywhere_under_a_system_dir() {
    // glibc rejects a cache hit for a -z nodeflib object when the hit *starts with* a system dir
    // ("/lib/x86_64-linux-gnu/", ..., "/lib/", "/usr/lib/"), so also in their subdirectories,
    // e.g. Debian's /usr/lib/x86_64-linux-gnu/libfakeroot/libfakeroot-0.so (from ld.so.conf.d).
    let Some((soname, cached)) = cache_entry_below_a_system_dir() else {
        note(
            "SKIPPED nodeflib_rejects_cache_hits_anywhere_under_a_system_dir: ld.so.cache has \
             no x86-64 entry in a subdirectory of a system dir",
        );
        return;
    };
    let fx = fixture();
    let d1 = fx.dir("d1").expect("mkdir d1");
    let flagged = build_lib(&d1, "libjpnodeflibsub.so.1", &[], &["-Wl,-z,now".into(), s(&cached).into()])
        .expect("build flagged lib");
    set_flags_1(&flagged, DF_1_NODEFLIB).expect("set DF_1_NODEFLIB");
    let plain = build_lib(&d1, "libjpdeflibsub.so.1", &[], &[s(&cached).into()]).expect("build plain lib");

    let exe = build_exe(&fx.root().join("exe"), &[&flagged], &rpath(&[s(&d1)])).expect("build exe");
    let result = load_host(&exe);
    assert_closure(
        &result,
        &[obj("libjpnodeflibsub.so.1", &flagged, &exe), libc(&exe)],
        &[miss(&soname, &[&exe, &flagged])],
    );
    assert_matches_reference(&result, &exe);

    // Without the flag, the same cache hit is used.
    let exe2 = build_exe(&fx.root().join("exe2"), &[&plain], &rpath(&[s(&d1)])).expect("build exe2");
    let result = load_host(&exe2);
    assert_closure(
        &result,
        &[obj("libjpdeflibsub.so.1", &plain, &exe2), libc(&exe2), obj(&soname, &cached, &plain)],
        &[],
    );
    assert_matches_reference(&result, &exe2);
}

/// (soname, path) of an x86-64 ld.so.cache entry strictly below a system dir (not directly in
/// one) whose file has that DT_SONAME, per `ldconfig -p`.
fn cache_entry_below_a_system_dir() -> Option<(String, PathBuf)> {
    let out = std::process::Command::new("/sbin/ldconfig").arg("-p").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|line| {
        let (left, path) = line.trim().split_once(" => ")?;
        let (soname, flags) = left.split_once(' ')?;
        let path = PathBuf::from(path);
        let parent = path.parent()?;
        let dirs = system_dirs();
        let below = !dirs.contains(&parent) && dirs.iter().any(|sys| parent.starts_with(sys));
        (flags.contains("x86-64") && below && soname_of(&path)? == soname).then(|| (soname.to_string(), path))
    })
}

fn soname_of(path: &Path) -> Option<String> {
    dynamic_strings(path, DT_SONAME).ok()?.into_iter().next()
}

// --- 10. static executables ------------------------------------------------------------------

#[test]
fn static_executable_has_no_interpreter_and_no_objects() {
    prerequisites::require(&prerequisites::STATIC_LIBC);
    let fx = fixture();
    for (name, pie) in [("static", false), ("static-pie", true)] {
        let exe = build_static_exe(&fx.root().join(name), pie).expect("build static exe");
        assert_eq!(read_interp(&exe).expect("read PT_INTERP"), None, "{name} has PT_INTERP");
        let result = load_host(&exe);
        assert_eq!(result.interpreter, None, "{name}: {}", describe(&result));
        assert!(result.objects.is_empty(), "{name}: {}", describe(&result));
        assert!(result.missing.is_empty(), "{name}: {}", describe(&result));
    }
}
