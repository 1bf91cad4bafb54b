//! Mining typical visual elements (the paper's Section 4): patch selection from typicality maps,
//! DIFT features of the patches, k-means clustering ranked by typicality, and the visual summary;
//! and mining co-typical elements across labels over parallel sets (Section 5.1, [`cotypicality`]).
pub mod cluster;
pub mod cotypicality;
pub mod dift;
pub mod doersch;
pub mod miner;
pub(crate) mod page;
pub mod patches;
pub mod report;
