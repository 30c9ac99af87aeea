//! Actuators against peers: local servers that speak each API's wire contract (with scripted
//! failures), moto for AWS, real processes for local replicas and commands.

mod cloud;
mod jobs;
mod kubernetes;
mod local;
pub(crate) mod support;
