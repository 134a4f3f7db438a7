//! `cli_args`: the command-line forms a user types, `--volume
//! HOST:CONTAINER[:ro|rw]`, `--tmpfs PATH[:size=..,mode=..]`, `--disk
//! IMAGE:CONTAINER[:ro|rw][:FSTYPE]` and the sizes of `parse_size`.
//!
//! The bytes are one argument given to each parser. What parses must print
//! back in the canonical form and parse to the same value (the parsers lose
//! nothing and read no ambiguity), and a container with it is validated and
//! turned into guest mounts whose paths all pass the checks when the
//! validation passed, parents before children.

use std::path::Path;

use vc_host::config::{ContainerConfig, DiskConfig, TmpfsConfig, VolumeConfig};
use vc_host::id::ContainerId;
use vc_host::storage::{check_container_path, container_mounts, parse_size};

fn volume_arg(v: &VolumeConfig) -> String {
    let host = v.host_path.to_str().expect("parsed from a str");
    let mode = if v.readonly { "ro" } else { "rw" };
    format!("{host}:{}:{mode}", v.container_path)
}

fn tmpfs_arg(t: &TmpfsConfig) -> String {
    let mut opts = Vec::new();
    if let Some(size) = t.size_bytes {
        opts.push(format!("size={size}"));
    }
    if let Some(mode) = t.mode {
        opts.push(format!("mode={mode:o}"));
    }
    if opts.is_empty() {
        t.path.clone()
    } else {
        format!("{}:{}", t.path, opts.join(","))
    }
}

fn disk_arg(d: &DiskConfig) -> String {
    let image = d.image.to_str().expect("parsed from a str");
    let mode = if d.readonly { "ro" } else { "rw" };
    format!("{image}:{}:{mode}:{}", d.container_path, d.fstype)
}

/// `value` printed by `print` parses back to `value`.
fn round_trip<T>(value: &T, print: fn(&T) -> String)
where
    T: std::str::FromStr + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    let arg = print(value);
    let back: T = arg
        .parse()
        .unwrap_or_else(|e| panic!("the canonical form {arg:?} of {value:?} is refused: {e:?}"));
    assert_eq!(&back, value, "{arg:?} parses to another value");
}

fn depth(path: &str) -> usize {
    path.split('/').filter(|p| !p.is_empty()).count()
}

pub(crate) fn run(data: &[u8]) {
    let arg = String::from_utf8_lossy(data);
    let arg = arg.as_ref();

    if let Ok(size) = parse_size(arg) {
        assert_eq!(parse_size(&size.to_string()), Ok(size));
    }
    let volume = arg.parse::<VolumeConfig>().ok();
    let tmpfs = arg.parse::<TmpfsConfig>().ok();
    let disk = arg.parse::<DiskConfig>().ok();
    if let Some(v) = &volume {
        round_trip(v, volume_arg);
    }
    if let Some(t) = &tmpfs {
        round_trip(t, tmpfs_arg);
    }
    if let Some(d) = &disk {
        round_trip(d, disk_arg);
    }

    let id = ContainerId::new("c").expect("a valid id");
    let mut c = ContainerConfig::new(id, Path::new("/"), vec!["/bin/sh".to_owned()]);
    c.volumes.extend(volume);
    c.tmpfs.extend(tmpfs);
    c.disks.extend(disk);
    let valid = c.validate().is_ok();
    let mounts = container_mounts(&c.storage(), |i| {
        vc_host::runtime::share::guest_volume_path(&c.id, i)
    });
    assert!(
        mounts
            .windows(2)
            .all(|w| depth(&w[0].destination) <= depth(&w[1].destination)),
        "mounts out of order: {mounts:?}"
    );
    if valid {
        for m in &mounts {
            assert_eq!(check_container_path(&m.destination), Ok(()), "{m:?}");
        }
    }
}
