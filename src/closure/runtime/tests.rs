use super::*;

#[test]
fn each_opening_function_triggers_its_need_and_nothing_else_does() {
    let cases: &[(&str, Option<Need>)] = &[
        ("iconv_open", Some(Need::Iconv)),
        ("pthread_cancel", Some(Need::Unwind)),
        ("pthread_exit", Some(Need::Unwind)),
        ("backtrace", Some(Need::Unwind)),
        ("_Unwind_Resume", Some(Need::Unwind)),
        ("setlocale", Some(Need::Locales)),
        ("newlocale", Some(Need::Locales)),
        ("tzset", Some(Need::Timezones)),
        ("localtime_r", Some(Need::Timezones)),
        ("mktime", Some(Need::Timezones)),
        ("strftime", Some(Need::Timezones)),
        ("getaddrinfo", Some(Need::Resolver)),
        ("gethostbyname", Some(Need::Resolver)),
        ("getnameinfo", Some(Need::Resolver)),
        ("openlog", Some(Need::Syslog)),
        ("syslog", Some(Need::Syslog)),
        ("iconv", None),
        ("gmtime", None),
        ("printf", None),
        ("pthread_create", None),
        ("setlocale_r", None),
    ];
    for (name, need) in cases {
        assert_eq!(need_of_symbol(name.as_bytes()), *need, "{name}");
    }
}

#[test]
fn terminfo_readers_are_libtinfo_and_libncurses_by_soname() {
    assert!(reads_terminfo("libtinfo.so.6"));
    assert!(reads_terminfo("libncursesw.so.6"));
    assert!(reads_terminfo("libncurses.so.6"));
    assert!(!reads_terminfo("libreadline.so.8"));
    assert!(!reads_terminfo("libc.so.6"));
}

#[test]
fn origins_show_the_import_and_its_importer() {
    let origin = Origin::runtime(
        Need::Iconv,
        "iconv_open".into(),
        JailPath::parse("/usr/bin/iconv").expect("a valid jail path"),
    );
    assert_eq!(origin.to_string(), "run-time: iconv_open in /usr/bin/iconv");
    assert_eq!(origin.needer().map(JailPath::as_str), Some("/usr/bin/iconv"), "it leaves with its importer");
    let config = JailPath::parse("/usr/lib/x86_64-linux-gnu/gconv/gconv-modules").expect("a valid jail path");
    let module = Origin::GconvConfig { config: config.clone() };
    assert_eq!(module.to_string(), config.as_str(), "a module shows the configuration that names it");
    assert_eq!(module.needer(), Some(&config));
}

#[test]
fn syslog_lines_bind_the_socket_s_directory_when_dev_log_is_a_link() {
    assert_eq!(
        syslog_lines(Some(Path::new("/run/systemd/journal/dev-log"))),
        "  [[files]]\n  src = \"/dev/log\"\n  [[mounts]]\n  kind = \"bind\"\n  source = \"/run/systemd/journal\"\n  \
         target = \"/run/systemd/journal\""
    );
    let plain = "  [[mounts]]\n  kind = \"bind\"\n  source = \"/dev/log\"\n  target = \"/dev/log\"";
    assert_eq!(syslog_lines(None), plain, "a socket at /dev/log itself");
    assert_eq!(syslog_lines(Some(Path::new("dev-log"))), plain, "a relative link names no directory to bind");
}
