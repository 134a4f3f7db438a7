//! The dumps against the real kernel, in a network namespace of the test's
//! own (a thread that unshared it): only `lo` is there.

use std::net::{IpAddr, Ipv4Addr};

use nix::sched::CloneFlags;
use vc_netlink::{exists, request, Netlink, NetlinkError};

/// Runs `work` on a thread in a new, empty network namespace.
fn in_new_netns<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, NetlinkError> + Send + 'static,
) -> Result<T, NetlinkError> {
    std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) (the tests run as root)");
        work()
    })
    .join()
    .expect("the namespace thread panicked")
}

#[test]
fn a_new_namespace_has_lo_and_its_addresses_once_up() -> Result<(), NetlinkError> {
    in_new_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let nl = Netlink::connect()?;
            let links = nl.links().await?;
            assert_eq!(links.len(), 1, "{links:?}");
            let lo = &links[0];
            assert_eq!(lo.name, "lo");
            assert!(!lo.up && !lo.ethernet, "{lo:?}");

            nl.handle()
                .link()
                .set(lo.index)
                .up()
                .execute()
                .await
                .map_err(request("bring up lo"))?;
            let lo = nl.links().await?.remove(0);
            assert!(lo.up, "{lo:?}");

            let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let addresses = nl.addresses().await?;
            assert!(
                addresses
                    .iter()
                    .any(|a| a.index == lo.index && a.addr == loopback && a.prefix_len == 8),
                "{addresses:?}"
            );
            // The kernel's own local route for it, outside the main table.
            let routes = nl.routes().await?;
            assert!(
                routes.iter().any(|r| r.kernel_made
                    && !r.in_main_table()
                    && r.destination == Some((loopback, 32))),
                "{routes:?}"
            );

            // Adding what exists is EEXIST, which `exists` recognizes.
            let again = nl
                .handle()
                .address()
                .add(lo.index, loopback, 8)
                .execute()
                .await
                .expect_err("the address exists");
            assert!(exists(&again), "{again:?}");
            let err = request("add 127.0.0.1/8 to lo")(again);
            assert_eq!(err.errno(), Some(nix::libc::EEXIST));
            assert_eq!(err.to_string(), "cannot add 127.0.0.1/8 to lo");
            Ok(())
        })
    })
}
