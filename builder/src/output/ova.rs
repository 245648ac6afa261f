//! The OVA: an OVF 1.0 descriptor for the image, its manifest, and the
//! stream-optimized VMDK, in one POSIX (ustar) tar.
//!
//! The members follow the order the DMTF OVF specification (DSP0243)
//! requires of an OVF package as one file: the descriptor first, then the
//! manifest, then the files in the order the descriptor's `References`
//! list them (here one disk). The manifest names each other member with its
//! SHA-256 (`SHA256(NAME)= HEX`, the form VirtualBox and VMware's ovftool
//! read and write).
//!
//! Everything is deterministic: the descriptor is text made from the
//! image's name and sizes alone, and every tar member has mode 0644, owner
//! and group 0 (`root`), and `SOURCE_DATE_EPOCH` as its mtime. The `tar`
//! crate writes the archive; the descriptor is written here as text (an XML
//! library would add a dependency to write one fixed document).
//!
//! The virtual hardware is what both VirtualBox and VMware import without
//! questions and the image's kernel drives: an LSI Logic SCSI controller
//! (`mptspi`), the disk on it, an E1000 NIC (`e1000`), 2 vCPUs and 4 GiB of
//! memory (the appliance's sizing guide asks for 1 core and 3 GiB).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

/// The virtual machine's CPUs.
pub const CPUS: u32 = 2;
/// The virtual machine's memory in MiB.
pub const MEMORY_MIB: u64 = 4096;

/// What the descriptor says of the image.
#[derive(Clone, Debug)]
pub struct Ovf<'a> {
    /// The virtual system's name and id (the image's name).
    pub name: &'a str,
    /// The VMDK's member name.
    pub disk_file: &'a str,
    /// The VMDK's size in bytes.
    pub disk_file_size: u64,
    /// The disk's virtual size in bytes.
    pub capacity: u64,
}

/// What goes into the OVA.
#[derive(Clone, Debug)]
pub struct OvaParts<'a> {
    /// The image's name: the descriptor is `NAME.ovf`, the manifest `NAME.mf`.
    pub name: &'a str,
    /// The stream-optimized VMDK; its file name is its member name.
    pub vmdk: &'a Path,
    /// The VMDK's sha256, lowercase hex.
    pub vmdk_sha256: &'a str,
    /// The disk's virtual size in bytes.
    pub capacity: u64,
    /// Every member's mtime (`SOURCE_DATE_EPOCH`).
    pub epoch: i64,
}

/// The OVA's member names: descriptor, manifest, disk.
pub fn member_names(name: &str) -> [String; 3] {
    [
        format!("{name}.ovf"),
        format!("{name}.mf"),
        format!("{name}-disk1.vmdk"),
    ]
}

/// The longest image name an OVA takes: its members' names must fit a
/// ustar header's 100-byte name field.
pub const MAX_NAME: usize = 90;

/// Writes the OVA to `out`.
pub fn write_ova(out: &Path, p: &OvaParts) -> Result<()> {
    let [ovf_name, mf_name, disk_name] = member_names(p.name);
    if p.name.len() > MAX_NAME {
        anyhow::bail!(
            "the image's name {:?} is too long for an OVA (at most {MAX_NAME} bytes)",
            p.name
        );
    }
    let disk_size = std::fs::metadata(p.vmdk)
        .with_context(|| format!("reading {}", p.vmdk.display()))?
        .len();
    let ovf = descriptor(&Ovf {
        name: p.name,
        disk_file: &disk_name,
        disk_file_size: disk_size,
        capacity: p.capacity,
    });
    let ovf_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ovf.as_bytes()));
    let mf = manifest(&[(&ovf_name, &ovf_sha), (&disk_name, p.vmdk_sha256)]);

    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let mtime = p.epoch.max(0) as u64;
    tar.append(&header(&ovf_name, ovf.len() as u64, mtime)?, ovf.as_bytes())?;
    tar.append(&header(&mf_name, mf.len() as u64, mtime)?, mf.as_bytes())?;
    let vmdk = File::open(p.vmdk).with_context(|| format!("opening {}", p.vmdk.display()))?;
    tar.append(&header(&disk_name, disk_size, mtime)?, vmdk)
        .with_context(|| format!("adding {} to the OVA", p.vmdk.display()))?;
    let mut w = tar.into_inner().context("finishing the OVA")?;
    w.flush()?;
    w.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("syncing {}", out.display()))
}

/// A ustar header of a regular file, owned by root, mode 0644.
fn header(name: &str, size: u64, mtime: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .with_context(|| format!("naming the OVA member {name:?}"))?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root")?;
    h.set_groupname("root")?;
    h.set_mtime(mtime);
    h.set_cksum();
    Ok(h)
}

/// The manifest: `SHA256(NAME)= HEX` per member, in member order.
pub fn manifest(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(name, sha)| format!("SHA256({name})= {sha}\n"))
        .collect()
}

/// Escapes text for an XML attribute or element.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// The OVF 1.0 descriptor. Within each `Item` the RASD elements are in the
/// order the CIM schema's sequence gives them (alphabetical).
pub fn descriptor(o: &Ovf) -> String {
    let name = esc(o.name);
    let file = esc(o.disk_file);
    let (size, capacity) = (o.disk_file_size, o.capacity);
    let memory = MEMORY_MIB;
    let cpus = CPUS;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ovf:version="1.0" xml:lang="en-US">
  <References>
    <File ovf:href="{file}" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The network the appliance is reached on</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>The appliance</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest">
      <Info>The guest operating system</Info>
      <Description>Ubuntu 64-bit</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-10</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory size</rasd:Description>
        <rasd:ElementName>{memory} MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:Description>The appliance's disk</rasd:Description>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>E1000 ethernet adapter</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_names_the_disk_and_its_sizes_and_escapes_the_name() {
        let d = descriptor(&Ovf {
            name: "a&b<c>",
            disk_file: "a&b<c>-disk1.vmdk",
            disk_file_size: 123,
            capacity: 4 << 30,
        });
        assert!(
            d.contains(
                r#"<File ovf:href="a&amp;b&lt;c&gt;-disk1.vmdk" ovf:id="file1" ovf:size="123"/>"#
            ),
            "{d}"
        );
        assert!(
            d.contains(&format!(r#"ovf:capacity="{}""#, 4u64 << 30)),
            "{d}"
        );
        assert!(d.contains("<Name>a&amp;b&lt;c&gt;</Name>"), "{d}");
        assert!(!d.contains("a&b"), "unescaped name in {d}");
        assert_eq!(
            d,
            descriptor(&Ovf {
                name: "a&b<c>",
                disk_file: "a&b<c>-disk1.vmdk",
                disk_file_size: 123,
                capacity: 4 << 30
            })
        );
    }

    #[test]
    fn manifest_lines() {
        assert_eq!(
            manifest(&[("x.ovf", "ab"), ("x-disk1.vmdk", "cd")]),
            "SHA256(x.ovf)= ab\nSHA256(x-disk1.vmdk)= cd\n"
        );
    }
}
