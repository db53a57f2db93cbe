use super::*;

const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max open files            1048576              1048576              files     
Max locked memory         8388608              8388608              bytes     
";

/// A well-set-up host: nothing to change for the default plan.
fn good_host() -> HostFacts {
    HostFacts {
        kernel_release: Some("6.8.0-1019-aws\n".into()),
        cpus_online: Some("0-3\n".into()),
        self_status: Some("Name:\tsluice\nCpus_allowed_list:\t0-3\n".into()),
        self_limits: Some(LIMITS.into()),
        somaxconn: Some("4096\n".into()),
        file_max: Some("9223372036854775807\n".into()),
        thp_enabled: Some("always [madvise] never\n".into()),
        thp_defrag: Some("always defer defer+madvise [madvise] never\n".into()),
        governors: vec![
            ("cpu0".into(), "performance".into()),
            ("cpu1".into(), "performance".into()),
        ],
        io_uring_disabled: Some("0\n".into()),
        ip_local_port_range: Some("32768\t60999\n".into()),
        uring: UringProbe {
            plain: Ok(()),
            coop_taskrun: Ok(()),
            sqpoll: Ok(()),
        },
    }
}

fn plan() -> Plan {
    Plan {
        workers: 0,
        driver: "io_uring".into(),
        uring_entries: 1024,
        uring_coop_taskrun: true,
        uring_sqpoll: false,
        uring_sqpoll_idle_ms: 1000,
        backlog: 1024,
        sessions: 1000,
    }
}

fn finding<'a>(findings: &'a [Finding], item: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.item == item)
        .unwrap_or_else(|| panic!("no finding for {item}"))
}

#[test]
fn a_good_host_is_all_ok_with_one_finding_per_item_in_order() {
    let findings = evaluate(&good_host(), &plan());
    let items: Vec<&str> = findings.iter().map(|f| f.item).collect();
    assert_eq!(items, ITEMS);
    for f in &findings {
        assert_eq!(f.status, Status::Ok, "{f:?}");
        assert!(f.fix.is_empty(), "{f:?}");
    }
    assert_eq!(worst(&findings), Status::Ok);
    assert_eq!(
        finding(&findings, "cores").reading,
        "4 online, 4 usable by this process; 4 workers (listen.workers = 0: one per usable core)"
    );
}

#[test]
fn somaxconn_below_the_backlog_warns_with_the_sysctl() {
    let mut host = good_host();
    host.somaxconn = Some("128\n".into());
    let f = evaluate(&host, &plan());
    let f = finding(&f, "somaxconn");
    assert_eq!(f.status, Status::Warn);
    assert!(f.reading.contains("at most 128"), "{}", f.reading);
    assert_eq!(f.fix[0], "sysctl -w net.core.somaxconn=1024");
    assert!(f.fix[1].contains("/etc/sysctl.d/"), "{:?}", f.fix);
}

#[test]
fn nofile_fails_below_what_the_workers_need_and_warns_below_the_sessions() {
    let limits = |soft: &str, hard: &str| {
        format!("Limit   Soft Limit   Hard Limit   Units\nMax open files            {soft}   {hard}   files\n")
    };
    let mut host = good_host();
    host.self_limits = Some(limits("1024", "4096"));
    let f = evaluate(&host, &plan());
    let nofile = finding(&f, "nofile");
    assert_eq!(nofile.status, Status::Warn, "{nofile:?}");
    assert!(
        nofile.fix[0].starts_with("LimitNOFILE=65536"),
        "{:?}",
        nofile.fix
    );
    assert!(
        nofile.fix.iter().any(|x| x.contains("ulimit -Hn 65536")),
        "the hard limit is below the target: {:?}",
        nofile.fix
    );

    host.self_limits = Some(limits("50", "50"));
    let f = evaluate(&host, &plan());
    assert_eq!(finding(&f, "nofile").status, Status::Fail);
    assert_eq!(worst(&f), Status::Fail);
    assert!(render(&f, &plan(), "test").contains("would not start"));

    host.self_limits = Some(limits("unlimited", "unlimited"));
    let f = evaluate(&host, &plan());
    assert_eq!(finding(&f, "nofile").status, Status::Ok);
}

#[test]
fn io_uring_refusals_warn_because_workers_fall_back() {
    let mut host = good_host();
    host.io_uring_disabled = Some("2\n".into());
    host.uring.plain = Err("Operation not permitted (os error 1)".into());
    host.uring.coop_taskrun = host.uring.plain.clone();
    host.uring.sqpoll = host.uring.plain.clone();
    let f = evaluate(&host, &plan());
    let uring = finding(&f, "io_uring");
    assert_eq!(uring.status, Status::Warn);
    assert!(
        uring.reading.contains("kernel.io_uring_disabled = 2"),
        "{}",
        uring.reading
    );
    assert_eq!(uring.fix[0], "sysctl -w kernel.io_uring_disabled=0");

    // Allowed by the sysctl but refused anyway: a container's seccomp profile.
    host.io_uring_disabled = None;
    let f = evaluate(&host, &plan());
    assert!(finding(&f, "io_uring").fix[0].contains("seccomp"));

    // With epoll configured nothing is wrong.
    let epoll = Plan {
        driver: "epoll".into(),
        ..plan()
    };
    let f = evaluate(&host, &epoll);
    assert_eq!(finding(&f, "io_uring").status, Status::Ok);
    assert!(finding(&f, "io_uring").reading.starts_with("not used"));
}

#[test]
fn old_kernels_refusing_coop_taskrun_or_sqpoll_warn_with_the_setting_to_change() {
    let mut host = good_host();
    host.uring.coop_taskrun = Err("Invalid argument (os error 22)".into());
    let f = evaluate(&host, &plan());
    let uring = finding(&f, "io_uring");
    assert_eq!(uring.status, Status::Warn);
    assert!(uring
        .fix
        .iter()
        .any(|x| x.contains("io.uring_coop_taskrun = false")));

    let mut host = good_host();
    host.uring.sqpoll = Err("Operation not permitted (os error 1)".into());
    let f = evaluate(&host, &plan());
    assert_eq!(
        finding(&f, "io_uring").status,
        Status::Ok,
        "SQPOLL not configured"
    );
    let sqpoll = Plan {
        uring_sqpoll: true,
        ..plan()
    };
    let f = evaluate(&host, &sqpoll);
    assert!(finding(&f, "io_uring").fix[0].contains("io.uring_sqpoll = false"));
}

#[test]
fn sqpoll_on_a_small_host_and_more_workers_than_cores_warn() {
    let mut host = good_host();
    host.self_status = Some("Cpus_allowed_list:\t0-1\n".into());
    let sqpoll = Plan {
        uring_sqpoll: true,
        ..plan()
    };
    let f = evaluate(&host, &sqpoll);
    let cores = finding(&f, "cores");
    assert_eq!(cores.status, Status::Warn);
    assert!(cores.reading.contains("SQPOLL") || cores.reading.contains("sqpoll"));

    let many = Plan {
        workers: 3,
        ..plan()
    };
    let f = evaluate(&host, &many);
    let cores = finding(&f, "cores");
    assert_eq!(cores.status, Status::Warn);
    assert!(cores.reading.contains("3 workers"), "{}", cores.reading);
}

#[test]
fn memlock_matters_only_before_linux_5_12() {
    let mut host = good_host();
    host.self_limits = Some(
        "Max open files  1048576  1048576  files\nMax locked memory  65536  65536  bytes\n".into(),
    );
    let f = evaluate(&host, &plan());
    let memlock = finding(&f, "memlock");
    assert_eq!(memlock.status, Status::Ok);
    assert!(
        memlock.reading.contains("memory cgroup"),
        "{}",
        memlock.reading
    );

    host.kernel_release = Some("5.10.0-28-amd64\n".into());
    let f = evaluate(&host, &plan());
    let memlock = finding(&f, "memlock");
    assert_eq!(
        memlock.status,
        Status::Warn,
        "4 rings of 1024 entries exceed 64 KiB"
    );
    assert!(
        memlock.fix[0].starts_with("LimitMEMLOCK="),
        "{:?}",
        memlock.fix
    );

    let small = Plan {
        workers: 1,
        uring_entries: 256,
        ..plan()
    };
    let f = evaluate(&host, &small);
    assert_eq!(
        finding(&f, "memlock").status,
        Status::Ok,
        "the small-host ring fits"
    );
}

#[test]
fn thp_always_and_slow_governors_warn() {
    let mut host = good_host();
    host.thp_enabled = Some("[always] madvise never\n".into());
    let f = evaluate(&host, &plan());
    let thp = finding(&f, "thp");
    assert_eq!(thp.status, Status::Warn);
    assert!(thp.fix[0].contains("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled"));

    host.thp_enabled = None;
    host.governors[1].1 = "powersave".into();
    let f = evaluate(&host, &plan());
    assert_eq!(finding(&f, "thp").status, Status::Ok);
    let governor = finding(&f, "cpu-governor");
    assert_eq!(governor.status, Status::Warn);
    assert_eq!(
        governor.reading,
        "1 of 2 CPUs not on performance: cpu1 powersave"
    );

    host.governors.clear();
    let f = evaluate(&host, &plan());
    assert!(finding(&f, "cpu-governor").reading.contains("no cpufreq"));
}

#[test]
fn narrow_port_ranges_and_low_file_max_warn() {
    let mut host = good_host();
    host.ip_local_port_range = Some("60000\t60499\n".into());
    host.file_max = Some("1000\n".into());
    let f = evaluate(&host, &plan());
    let ports = finding(&f, "ephemeral-ports");
    assert_eq!(ports.status, Status::Warn);
    assert!(ports.reading.contains("500 ports"), "{}", ports.reading);
    assert_eq!(
        ports.fix[0],
        "sysctl -w net.ipv4.ip_local_port_range=\"10000 65000\""
    );
    assert_eq!(finding(&f, "file-max").status, Status::Warn);
}

#[test]
fn unreadable_files_are_reported_not_guessed() {
    let host = HostFacts {
        kernel_release: None,
        cpus_online: None,
        self_status: None,
        self_limits: None,
        somaxconn: None,
        file_max: None,
        thp_enabled: None,
        thp_defrag: None,
        governors: Vec::new(),
        io_uring_disabled: None,
        ip_local_port_range: None,
        uring: good_host().uring,
    };
    let f = evaluate(&host, &plan());
    assert_eq!(f.len(), ITEMS.len());
    assert!(finding(&f, "somaxconn")
        .reading
        .contains("could not be read"));
    assert!(finding(&f, "nofile").reading.contains("could not be read"));
}

#[test]
fn the_report_serializes_for_json() {
    let f = evaluate(&good_host(), &plan());
    let json = serde_json::to_value(&f).expect("serializes");
    assert_eq!(json[0]["item"], "cores");
    assert_eq!(json[0]["status"], "OK");
}

/// The real check on the machine running the tests: every item gets a reading, and the
/// probe really asked the kernel (on any machine the plain ring either works or says why).
#[test]
fn the_real_host_gives_a_reading_for_every_item() {
    let plan = plan();
    let facts = HostFacts::read(&plan);
    assert!(
        facts.self_limits.is_some(),
        "/proc/self/limits is readable on Linux"
    );
    let findings = evaluate(&facts, &plan);
    let items: Vec<&str> = findings.iter().map(|f| f.item).collect();
    assert_eq!(items, ITEMS);
    for f in &findings {
        assert!(!f.reading.is_empty(), "{f:?}");
        assert!(!f.reading.contains("could not be read"), "{f:?}");
        if f.status != Status::Ok {
            assert!(!f.fix.is_empty(), "a problem without a fix: {f:?}");
        }
    }
    let text = render(&findings, &plan, "this machine");
    for item in ITEMS {
        assert!(text.contains(item), "{text}");
    }
    eprintln!("{text}");
}
