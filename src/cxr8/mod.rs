//! ChestX-ray8 region-of-interest evaluation (the paper's Fig. 11):
//! NIH's CSV files, boxes scaled to the working resolution, AUC-PR of typicality maps against the
//! boxes of each disease, the evaluation loop over a finetuned and a baseline model, and the report.
pub mod evaluate;
pub mod metrics;
pub mod report;
pub mod tables;

pub use evaluate::{evaluate, evaluate_files, prompt_for, Evaluation, EvaluationFiles, EvaluationOptions, EvaluationRun, NULL_PROMPT};
pub use metrics::{auc_pr, authors_curve, authors_thresholds, average_precision, positive_mask, AucPr, AuthorsCurve, Summary};
pub use report::{DiseaseRow, ImageResult, ModelFigures, Report};
pub use tables::{
    boxes_by_image, boxes_confirmed_by, canonical_finding, parse_bbox_list, parse_data_entry, read_bbox_list, read_data_entry, BoundingBox, BoxEntry,
    DataEntry, BOXED_DISEASES,
};
