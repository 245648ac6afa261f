//! `imgbuild`: layer recipes → root tree → bootable disk image, plus the seed.
