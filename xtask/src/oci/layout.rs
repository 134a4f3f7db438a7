//! OCI image layouts as one tar archive (what `ctr image import` and `docker load` read):
//! `oci-layout`, `index.json` and `blobs/sha256/<digest>` for the image configuration, the
//! manifest and each gzip layer. The index names the image with the `io.containerd.image.name`
//! annotation (containerd's import uses it as the image name) and
//! `org.opencontainers.image.ref.name` (the tag).
//!
//! Every JSON document is written with its object keys sorted (oci-spec keeps annotations in hash
//! maps), so the same inputs always give the same bytes and the same digests.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result};
use guest_image::hash::sha256_hex;
use oci_spec::image::{
    Arch, Config, Descriptor, DescriptorBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder,
    Sha256Digest,
};

use super::layer::{gzip, TarWriter};

/// The annotation containerd's `ctr image import` names an image by.
pub(crate) const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation of the reference (tag) within a layout.
pub(crate) const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// One image: its full name (`localhost/vc/busybox:latest`), its runtime configuration, and its
/// layers as uncompressed tar archives, lowest first.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub name: String,
    pub config: Config,
    pub layers: Vec<Vec<u8>>,
}

impl Image {
    /// The tag: what follows the last `:` after the last `/`, else `latest`.
    fn tag(&self) -> &str {
        let last = self.name.rsplit('/').next().unwrap_or(&self.name);
        last.rsplit_once(':').map_or("latest", |(_, tag)| tag)
    }
}

/// `value` as JSON with every object's keys sorted.
fn canonical_json(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    fn sort(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let value = serde_json::to_value(value).context("cannot encode an OCI document")?;
    serde_json::to_vec(&sort(value)).context("cannot encode an OCI document")
}

/// The blobs of a layout, by hex digest.
#[derive(Debug, Default)]
struct Blobs(BTreeMap<String, Vec<u8>>);

impl Blobs {
    /// Stores `data` and returns its descriptor.
    fn add(&mut self, media_type: MediaType, data: Vec<u8>) -> Result<Descriptor> {
        let hex = sha256_hex(&data);
        let digest: Sha256Digest = hex.parse().context("a SHA-256 digest")?;
        let descriptor = Descriptor::new(media_type, data.len() as u64, digest);
        self.0.insert(hex, data);
        Ok(descriptor)
    }
}

fn platform() -> Result<oci_spec::image::Platform> {
    Ok(PlatformBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .build()?)
}

/// The image layout archive of `image`.
pub(crate) fn layout_archive(image: &Image) -> Result<Vec<u8>> {
    let mut blobs = Blobs::default();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in &image.layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(layer)));
        layers.push(blobs.add(MediaType::ImageLayerGzip, gzip(layer)?)?);
    }
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(image.config.clone())
        .rootfs(RootFsBuilder::default().diff_ids(diff_ids).build()?)
        .build()?;
    let config = blobs.add(MediaType::ImageConfig, canonical_json(&config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()?;
    let manifest = blobs.add(MediaType::ImageManifest, canonical_json(&manifest)?)?;
    let annotations = HashMap::from([
        (IMAGE_NAME_ANNOTATION.to_owned(), image.name.clone()),
        (REF_NAME_ANNOTATION.to_owned(), image.tag().to_owned()),
    ]);
    let manifest = DescriptorBuilder::default()
        .media_type(manifest.media_type().clone())
        .digest(manifest.digest().clone())
        .size(manifest.size())
        .annotations(annotations)
        .platform(platform()?)
        .build()?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest])
        .build()?;
    let oci_layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;

    let mut tar = TarWriter::new();
    tar.dir("blobs", 0o755)?;
    tar.dir("blobs/sha256", 0o755)?;
    for (hex, data) in &blobs.0 {
        tar.file(&format!("blobs/sha256/{hex}"), 0o644, data)?;
    }
    tar.file("index.json", 0o644, &canonical_json(&index)?)?;
    tar.file("oci-layout", 0o644, &canonical_json(&oci_layout)?)?;
    tar.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read as _;

    use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, OciLayout};

    use super::*;

    /// The files of a layout archive, by path.
    pub(crate) fn files(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut tar = tar::Archive::new(archive);
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            out.insert(path, data);
        }
        out
    }

    /// The blob a descriptor points to, checked against its digest and size.
    pub(crate) fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, d: &Descriptor) -> &'a [u8] {
        let hex = d.as_digest_sha256().expect("a sha256 digest");
        let data = files
            .get(&format!("blobs/sha256/{hex}"))
            .unwrap_or_else(|| panic!("blob {hex} is missing"));
        assert_eq!(sha256_hex(data), hex, "digest of blob {hex}");
        assert_eq!(data.len() as u64, d.size(), "size of blob {hex}");
        data
    }

    /// Parses and checks a layout: every descriptor's blob exists with its digest and size, the
    /// diff ids match the uncompressed layers, and no blob is left over. Returns the index's
    /// manifest descriptor, the configuration and the uncompressed layers.
    pub(crate) fn check_layout(archive: &[u8]) -> (Descriptor, ImageConfiguration, Vec<Vec<u8>>) {
        let files = files(archive);
        let layout = OciLayout::from_reader(files["oci-layout"].as_slice()).expect("oci-layout");
        assert_eq!(layout.image_layout_version(), "1.0.0");
        let index = ImageIndex::from_reader(files["index.json"].as_slice()).expect("index.json");
        assert_eq!(index.schema_version(), 2);
        assert_eq!(index.manifests().len(), 1);
        let desc = index.manifests()[0].clone();
        assert_eq!(desc.media_type(), &MediaType::ImageManifest);
        let manifest = ImageManifest::from_reader(blob(&files, &desc)).expect("manifest");
        assert_eq!(manifest.config().media_type(), &MediaType::ImageConfig);
        let config =
            ImageConfiguration::from_reader(blob(&files, manifest.config())).expect("config");
        assert_eq!(config.rootfs().diff_ids().len(), manifest.layers().len());
        let mut layers = Vec::new();
        for (layer, diff_id) in manifest.layers().iter().zip(config.rootfs().diff_ids()) {
            assert_eq!(layer.media_type(), &MediaType::ImageLayerGzip);
            let mut data = Vec::new();
            flate2::read::GzDecoder::new(blob(&files, layer))
                .read_to_end(&mut data)
                .expect("gunzip");
            assert_eq!(diff_id, &format!("sha256:{}", sha256_hex(&data)));
            layers.push(data);
        }
        let blobs = files.keys().filter(|p| p.starts_with("blobs/")).count();
        assert_eq!(blobs, 2 + manifest.layers().len(), "no stray blobs");
        (desc, config, layers)
    }

    fn sample() -> Image {
        let mut tar = TarWriter::new();
        tar.dir("bin", 0o755).expect("dir");
        tar.file("bin/true", 0o755, b"\x7fELF").expect("file");
        let config = oci_spec::image::ConfigBuilder::default()
            .cmd(vec!["/bin/true".to_owned()])
            .build()
            .expect("config");
        Image {
            name: "localhost/vc/sample:v1".to_owned(),
            config,
            layers: vec![tar.finish().expect("tar")],
        }
    }

    #[test]
    fn layout_parses_and_digests_match() {
        let image = sample();
        let archive = layout_archive(&image).expect("layout");
        let (desc, config, layers) = check_layout(&archive);
        let ann = desc.annotations().as_ref().expect("annotations");
        assert_eq!(ann[IMAGE_NAME_ANNOTATION], "localhost/vc/sample:v1");
        assert_eq!(ann[REF_NAME_ANNOTATION], "v1");
        let platform = desc.platform().as_ref().expect("platform");
        assert_eq!(platform.architecture(), &Arch::Amd64);
        assert_eq!(platform.os(), &Os::Linux);
        assert_eq!(
            config.config().as_ref().and_then(|c| c.cmd().clone()),
            Some(vec!["/bin/true".to_owned()])
        );
        assert_eq!(layers, image.layers);
    }

    #[test]
    fn two_builds_are_identical() {
        // Each build makes new hash maps (new random seeds): sorted keys keep the bytes equal.
        let a = layout_archive(&sample()).expect("layout");
        for _ in 0..4 {
            assert_eq!(layout_archive(&sample()).expect("layout"), a);
        }
    }

    #[test]
    fn json_keys_are_sorted() {
        let map = HashMap::from([("b", 1), ("a", 2), ("c", 3)]);
        assert_eq!(
            canonical_json(&map).expect("json"),
            br#"{"a":2,"b":1,"c":3}"#
        );
    }

    #[test]
    fn tags() {
        let image = |name: &str| Image {
            name: name.to_owned(),
            ..sample()
        };
        assert_eq!(image("localhost/vc/busybox:latest").tag(), "latest");
        assert_eq!(image("localhost:5000/vc/busybox").tag(), "latest");
        assert_eq!(image("localhost:5000/vc/busybox:1.2").tag(), "1.2");
    }
}
