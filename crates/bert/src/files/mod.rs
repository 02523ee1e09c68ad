//! Bytes on disk: safetensors files read tensor by tensor or mapped in place ([`safetensors`]) and
//! written laid out for mapping ([`safetensors_write`]), files written atomically ([`write`]), and the
//! one hash used for cache keys ([`hash`]).

pub mod hash;
pub mod safetensors;
pub mod safetensors_write;
pub mod write;
