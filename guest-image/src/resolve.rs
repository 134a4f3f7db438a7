//! Dependency resolution: from the wanted module names to the list of module files to ship, in an
//! order where every module comes after all of its dependencies (the order the agent loads them).
//!
//! The order is deterministic: wanted modules are visited in the order given, each module's
//! dependencies in the order its `depends=` lists them, depth first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::modinfo::{ModInfo, ModInfoError};
use crate::modules::{Lookup, ModuleTree};

/// Errors of resolving modules.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A module is neither a file of the tree nor built into the kernel.
    #[error("module `{name}` (wanted by {wanted_by}) is neither in the module tree nor built into the kernel")]
    Missing {
        /// The missing module.
        name: String,
        /// Who needs it: "the guest module list" or "module `x`".
        wanted_by: String,
    },
    /// A module exists only compressed.
    #[error(
        "module `{name}` is only there compressed ({path}); the guest loads uncompressed .ko files"
    )]
    Compressed {
        /// The module.
        name: String,
        /// The compressed file.
        path: PathBuf,
    },
    /// A module's `.modinfo` could not be read.
    #[error("cannot read the .modinfo of module `{name}` at {path}")]
    ModInfo {
        /// The module.
        name: String,
        /// Its file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ModInfoError,
    },
    /// A module file names itself differently from its file name.
    #[error("module file {path} says its name is `{actual}`, expected `{expected}`")]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// The name from the file name.
        expected: String,
        /// The `name=` of its `.modinfo`.
        actual: String,
    },
    /// Modules depend on each other in a cycle.
    #[error("modules depend on each other in a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The cycle, first module repeated at the end.
        cycle: Vec<String>,
    },
}

/// What an index knows about one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Built into the kernel: nothing to ship or load.
    Builtin,
    /// A loadable module file.
    Loadable {
        /// The `.ko` file.
        path: PathBuf,
        /// Its `.modinfo`.
        info: ModInfo,
    },
}

/// Something that can find modules by name.
pub trait ModuleIndex {
    /// Finds module `name`; `Ok(None)` when it does not exist.
    fn find(&self, name: &str) -> Result<Option<Found>, ResolveError>;
}

impl ModuleIndex for ModuleTree {
    fn find(&self, name: &str) -> Result<Option<Found>, ResolveError> {
        match self.lookup(name) {
            Lookup::Missing => Ok(None),
            Lookup::Builtin => Ok(Some(Found::Builtin)),
            Lookup::Compressed(path) => Err(ResolveError::Compressed {
                name: name.to_owned(),
                path: path.to_owned(),
            }),
            Lookup::File(path) => {
                let info = ModInfo::read(path).map_err(|source| ResolveError::ModInfo {
                    name: name.to_owned(),
                    path: path.to_owned(),
                    source,
                })?;
                if info.name != name {
                    return Err(ResolveError::NameMismatch {
                        path: path.to_owned(),
                        expected: name.to_owned(),
                        actual: info.name,
                    });
                }
                Ok(Some(Found::Loadable {
                    path: path.to_owned(),
                    info,
                }))
            }
        }
    }
}

impl ModuleIndex for BTreeMap<String, Found> {
    fn find(&self, name: &str) -> Result<Option<Found>, ResolveError> {
        Ok(self.get(name).cloned())
    }
}

/// One module to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    /// The module name.
    pub name: String,
    /// Its `.ko` file.
    pub path: PathBuf,
    /// Its `.modinfo`.
    pub info: ModInfo,
}

impl ResolvedModule {
    /// The file name it gets in the initrd: `<name>.ko`.
    pub fn file_name(&self) -> String {
        format!("{}.ko", self.name)
    }
}

/// The result of resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Modules to ship, dependencies first.
    pub load_order: Vec<ResolvedModule>,
    /// Wanted modules (or dependencies) that the kernel has built in, in the order met.
    pub builtin: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Visiting,
    Done,
}

/// Resolves `wanted` against `index`.
pub fn resolve<I: ModuleIndex + ?Sized>(
    index: &I,
    wanted: &[&str],
) -> Result<Resolution, ResolveError> {
    let mut resolver = Resolver {
        index,
        state: BTreeMap::new(),
        stack: Vec::new(),
        out: Resolution::default(),
    };
    for name in wanted {
        resolver.visit(&name.replace('-', "_"), None)?;
    }
    Ok(resolver.out)
}

struct Resolver<'a, I: ?Sized> {
    index: &'a I,
    state: BTreeMap<String, State>,
    stack: Vec<String>,
    out: Resolution,
}

impl<I: ModuleIndex + ?Sized> Resolver<'_, I> {
    fn visit(&mut self, name: &str, wanted_by: Option<&str>) -> Result<(), ResolveError> {
        match self.state.get(name) {
            Some(State::Done) => return Ok(()),
            Some(State::Visiting) => {
                let start = self.stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = self.stack[start..].to_vec();
                cycle.push(name.to_owned());
                return Err(ResolveError::Cycle { cycle });
            }
            None => {}
        }
        let found = self
            .index
            .find(name)?
            .ok_or_else(|| ResolveError::Missing {
                name: name.to_owned(),
                wanted_by: match wanted_by {
                    Some(parent) => format!("module `{parent}`"),
                    None => "the guest module list".to_owned(),
                },
            })?;
        match found {
            Found::Builtin => {
                self.state.insert(name.to_owned(), State::Done);
                self.out.builtin.push(name.to_owned());
            }
            Found::Loadable { path, info } => {
                self.state.insert(name.to_owned(), State::Visiting);
                self.stack.push(name.to_owned());
                for dep in &info.depends {
                    self.visit(&dep.replace('-', "_"), Some(name))?;
                }
                self.stack.pop();
                self.state.insert(name.to_owned(), State::Done);
                self.out.load_order.push(ResolvedModule {
                    name: name.to_owned(),
                    path,
                    info,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loadable(name: &str, deps: &[&str]) -> (String, Found) {
        (
            name.to_owned(),
            Found::Loadable {
                path: PathBuf::from(format!("/m/{name}.ko")),
                info: ModInfo {
                    name: name.to_owned(),
                    depends: deps.iter().map(|d| (*d).to_owned()).collect(),
                    vermagic: None,
                },
            },
        )
    }

    fn names(r: &Resolution) -> Vec<&str> {
        r.load_order.iter().map(|m| m.name.as_str()).collect()
    }

    /// The dependency graph of the Debian 6.1 cloud kernel, as read from its modules.
    fn debian_cloud() -> BTreeMap<String, Found> {
        [
            loadable("virtio_ring", &[]),
            loadable("virtio", &["virtio_ring"]),
            loadable("virtio_mmio", &["virtio", "virtio_ring"]),
            loadable("virtio_pci_modern_dev", &[]),
            loadable("virtio_pci_legacy_dev", &[]),
            loadable(
                "virtio_pci",
                &[
                    "virtio_ring",
                    "virtio_pci_modern_dev",
                    "virtio_pci_legacy_dev",
                    "virtio",
                ],
            ),
            loadable("vsock", &[]),
            loadable("vmw_vsock_virtio_transport_common", &["vsock"]),
            loadable(
                "vmw_vsock_virtio_transport",
                &[
                    "virtio",
                    "vmw_vsock_virtio_transport_common",
                    "virtio_ring",
                    "vsock",
                ],
            ),
            loadable("failover", &[]),
            loadable("net_failover", &["failover"]),
            loadable("virtio_net", &["virtio_ring", "virtio", "net_failover"]),
            loadable("virtio_blk", &["virtio", "virtio_ring"]),
            loadable("fuse", &[]),
            loadable("virtiofs", &["fuse", "virtio", "virtio_ring"]),
            loadable("overlay", &[]),
            loadable("virtio_balloon", &["virtio", "virtio_ring"]),
        ]
        .into_iter()
        .collect()
    }

    fn assert_deps_first(r: &Resolution) {
        for (i, m) in r.load_order.iter().enumerate() {
            for dep in &m.info.depends {
                let pos = r.load_order.iter().position(|x| &x.name == dep);
                if let Some(pos) = pos {
                    assert!(pos < i, "{dep} must come before {}", m.name);
                } else {
                    assert!(
                        r.builtin.contains(dep),
                        "{dep} is neither loaded nor built in"
                    );
                }
            }
        }
    }

    #[test]
    fn guest_list_on_debian_cloud() {
        let r = resolve(&debian_cloud(), crate::modules::GUEST_MODULES).expect("resolve");
        assert_eq!(r.load_order.len(), 17);
        assert!(r.builtin.is_empty());
        assert_deps_first(&r);
        assert_eq!(names(&r)[..2], ["virtio_ring", "virtio"]);
    }

    #[test]
    fn deps_come_first_even_when_listed_last() {
        let index: BTreeMap<_, _> = [
            loadable("a", &["b"]),
            loadable("b", &["c"]),
            loadable("c", &[]),
        ]
        .into_iter()
        .collect();
        let r = resolve(&index, &["a", "c", "b"]).expect("resolve");
        assert_eq!(names(&r), ["c", "b", "a"]);
    }

    #[test]
    fn order_is_deterministic() {
        let index: BTreeMap<_, _> = [
            loadable("top", &["z", "y"]),
            loadable("z", &[]),
            loadable("y", &[]),
        ]
        .into_iter()
        .collect();
        let r = resolve(&index, &["top"]).expect("resolve");
        assert_eq!(names(&r), ["z", "y", "top"]);
    }

    #[test]
    fn builtins_are_not_shipped() {
        let mut index: BTreeMap<_, _> = [loadable("virtio_net", &["failover"])]
            .into_iter()
            .collect();
        index.insert("failover".to_owned(), Found::Builtin);
        index.insert("overlay".to_owned(), Found::Builtin);
        let r = resolve(&index, &["virtio_net", "overlay"]).expect("resolve");
        assert_eq!(names(&r), ["virtio_net"]);
        assert_eq!(r.builtin, ["failover", "overlay"]);
        assert_deps_first(&r);
    }

    #[test]
    fn missing_wanted_module() {
        let err = resolve(&debian_cloud(), &["9pnet_virtio"]).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "module `9pnet_virtio` (wanted by the guest module list) is neither in the module tree nor built into the kernel"
        );
    }

    #[test]
    fn missing_dependency_names_its_parent() {
        let index: BTreeMap<_, _> = [loadable("a", &["gone"])].into_iter().collect();
        let err = resolve(&index, &["a"]).expect_err("missing");
        assert!(
            matches!(err, ResolveError::Missing { ref name, ref wanted_by } if name == "gone" && wanted_by == "module `a`"),
            "{err}"
        );
    }

    #[test]
    fn cycle_is_reported() {
        let index: BTreeMap<_, _> = [
            loadable("a", &["b"]),
            loadable("b", &["c"]),
            loadable("c", &["a"]),
        ]
        .into_iter()
        .collect();
        let err = resolve(&index, &["a"]).expect_err("cycle");
        assert_eq!(
            err.to_string(),
            "modules depend on each other in a cycle: a -> b -> c -> a"
        );
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let index: BTreeMap<_, _> = [loadable("a", &["a"])].into_iter().collect();
        assert!(matches!(
            resolve(&index, &["a"]),
            Err(ResolveError::Cycle { cycle }) if cycle == ["a", "a"]
        ));
    }

    #[test]
    fn dashes_are_normalized() {
        let index: BTreeMap<_, _> = [loadable("virtio_rng", &[])].into_iter().collect();
        let r = resolve(&index, &["virtio-rng"]).expect("resolve");
        assert_eq!(names(&r), ["virtio_rng"]);
        assert_eq!(r.load_order[0].file_name(), "virtio_rng.ko");
    }
}
