#![doc = include_str!("../README.md")]

pub mod control;

#[cfg(not(test))]
mod shim;
