//! Which cloud or hypervisor this is, from the firmware's DMI strings
//! (`/sys/class/dmi/id/{sys_vendor,product_name,chassis_asset_tag,
//! product_version}`), read before any network source is asked so that
//! only the likely one is. Reading a few sysfs files costs nothing; a
//! platform not recognised asks the generic sources instead (see
//! [`Platform::sources`]). The strings are the ones the platforms document
//! and cloud-init's `ds-identify` matches.

use std::path::Path;

use super::Kind;

/// Azure's chassis asset tag (every Azure VM carries it).
pub const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";

/// What the DMI strings say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Azure,
    Ec2,
    Gce,
    OpenStack,
    Vmware,
    Hetzner,
    DigitalOcean,
    Oracle,
    /// Plain QEMU/KVM, Proxmox, VirtualBox, Hyper-V outside Azure, bare
    /// metal, or DMI not readable.
    Unknown,
}

/// The DMI strings (trimmed; empty when absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dmi {
    pub sys_vendor: String,
    pub product_name: String,
    pub product_version: String,
    pub chassis_asset_tag: String,
}

impl Dmi {
    /// Reads `/sys/class/dmi/id/*` under `root`: each file at most 256
    /// bytes, never through a link outside sysfs (the files are the
    /// kernel's; a missing one is empty).
    pub fn read(root: &Path) -> Dmi {
        let f = |name: &str| {
            let p = root.join("sys/class/dmi/id").join(name);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_file() => {}
                _ => return String::new(),
            }
            let mut buf = Vec::new();
            use std::io::Read;
            let _ = std::fs::File::open(&p).and_then(|f| f.take(256).read_to_end(&mut buf));
            String::from_utf8_lossy(&buf).trim().to_string()
        };
        Dmi {
            sys_vendor: f("sys_vendor"),
            product_name: f("product_name"),
            product_version: f("product_version"),
            chassis_asset_tag: f("chassis_asset_tag"),
        }
    }

    pub fn platform(&self) -> Platform {
        let vendor = self.sys_vendor.as_str();
        let product = self.product_name.as_str();
        let tag = self.chassis_asset_tag.as_str();
        if tag == AZURE_ASSET_TAG {
            Platform::Azure
        } else if tag == "OracleCloud.com" {
            Platform::Oracle
        } else if vendor == "Amazon EC2"
            || self.product_version.to_ascii_lowercase().contains("amazon")
        {
            Platform::Ec2
        } else if vendor == "Google" || product == "Google Compute Engine" {
            Platform::Gce
        } else if vendor == "Hetzner" {
            Platform::Hetzner
        } else if vendor == "DigitalOcean" {
            Platform::DigitalOcean
        } else if vendor.starts_with("VMware") || product.starts_with("VMware") {
            Platform::Vmware
        } else if product.starts_with("OpenStack")
            || vendor.starts_with("OpenStack")
            || ["OpenTelekomCloud", "SAP CCloud VM", "HUAWEICLOUD"].contains(&tag)
        {
            Platform::OpenStack
        } else {
            Platform::Unknown
        }
    }
}

impl Platform {
    /// The sources asked on this platform, in order: its own; on an
    /// unknown one the generic services that answer on plain KVM hosts
    /// (EC2-compatible, OpenStack's own, GCE's).
    pub fn sources(self) -> &'static [Kind] {
        match self {
            Platform::Azure => &[Kind::Azure],
            Platform::Ec2 => &[Kind::Ec2],
            Platform::Gce => &[Kind::Gce],
            Platform::OpenStack => &[Kind::OpenStack, Kind::Ec2],
            Platform::Vmware => &[Kind::Vmware],
            Platform::Hetzner => &[Kind::Hetzner],
            Platform::DigitalOcean => &[Kind::DigitalOcean],
            Platform::Oracle => &[Kind::Oracle],
            Platform::Unknown => &[Kind::Ec2, Kind::OpenStack, Kind::Gce],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Platform::Azure => "azure",
            Platform::Ec2 => "ec2",
            Platform::Gce => "gce",
            Platform::OpenStack => "openstack",
            Platform::Vmware => "vmware",
            Platform::Hetzner => "hetzner",
            Platform::DigitalOcean => "digitalocean",
            Platform::Oracle => "oracle",
            Platform::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dmi(vendor: &str, product: &str, tag: &str) -> Platform {
        Dmi {
            sys_vendor: vendor.into(),
            product_name: product.into(),
            product_version: String::new(),
            chassis_asset_tag: tag.into(),
        }
        .platform()
    }

    #[test]
    fn platforms_from_dmi() {
        let ms = "Microsoft Corporation";
        assert_eq!(dmi(ms, "Virtual Machine", AZURE_ASSET_TAG), Platform::Azure);
        // Hyper-V outside Azure: no asset tag, no Azure source.
        assert_eq!(dmi(ms, "Virtual Machine", ""), Platform::Unknown);
        assert_eq!(dmi("Amazon EC2", "t3.micro", ""), Platform::Ec2);
        assert_eq!(dmi("Google", "Google Compute Engine", ""), Platform::Gce);
        assert_eq!(
            dmi("OpenStack Foundation", "OpenStack Nova", ""),
            Platform::OpenStack
        );
        assert_eq!(dmi("VMware, Inc.", "VMware7,1", ""), Platform::Vmware);
        assert_eq!(dmi("Hetzner", "vServer", ""), Platform::Hetzner);
        assert_eq!(dmi("DigitalOcean", "Droplet", ""), Platform::DigitalOcean);
        assert_eq!(
            dmi("QEMU", "Standard PC", "OracleCloud.com"),
            Platform::Oracle
        );
        assert_eq!(
            dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)", ""),
            Platform::Unknown
        );
        assert_eq!(Dmi::default().platform(), Platform::Unknown);
    }

    #[test]
    fn dmi_read_never_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let id = d.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&id).unwrap();
        std::fs::write(id.join("sys_vendor"), "Hetzner\n").unwrap();
        std::fs::write(d.path().join("elsewhere"), AZURE_ASSET_TAG).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), id.join("chassis_asset_tag"))
            .unwrap();
        std::fs::write(id.join("product_name"), "x".repeat(10000)).unwrap();
        let got = Dmi::read(d.path());
        assert_eq!(got.sys_vendor, "Hetzner");
        assert_eq!(got.chassis_asset_tag, "");
        assert_eq!(got.product_name.len(), 256);
        assert_eq!(got.platform(), Platform::Hetzner);
    }
}
