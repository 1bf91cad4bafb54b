//! Mining typical visual elements: patch selection from typicality maps (more to come: DIFT features,
//! clustering, the visual summary).
pub mod cluster;
pub mod dift;
pub mod patches;
