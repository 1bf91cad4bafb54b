//! ChestX-ray8 evaluation: NIH's CSV files as shipped, the synthetic set's files read
//! unchanged, and AUC-PR against scikit-learn (average precision, 1e-9) and a direct NumPy
//! reimplementation of the authors' curve (tests/reference/cxr8_reference.py), on random maps and boxes.
mod common;

use std::path::PathBuf;
use std::process::Command;

use diffmine::cxr8::{self, auc_pr, authors_curve, average_precision, positive_mask, BoundingBox};
use diffmine::rng::SplitMix64;
use diffmine::Error;
use serde_json::{json, Value};

/// Rows as NIH ships them: the 2017 release's trailing empty column, "058Y" ages in the first release
/// and plain numbers later, `|`-separated findings and `No Finding`.
const DATA_ENTRY: &str = "\
Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],
00000001_000.png,Cardiomegaly,0,1,058Y,M,PA,2682,2749,0.143,0.143,
00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,
00000005_000.png,No Finding,0,5,69,F,PA,2048,2500,0.168,0.168,
00000013_005.png,Emphysema|Infiltration|Pleural_Thickening|Pneumothorax,5,13,60,M,AP,3056,2544,0.139,0.139,
";

/// Box rows as NIH ships them (three empty trailing columns, `Infiltrate`), with two boxes for one
/// image and disease.
const BBOX_LIST: &str = "\
Image Index,Finding Label,Bbox [x,y,w,h],,,
00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661,,,
00014716_007.png,Atelectasis,686.067796610169,131.079322033898,185.491525423729,313.491525423729,,,
00029817_009.png,Infiltrate,614.4,288.711111111111,251.733333333333,276.764444444444,,,
00013118_008.png,Atelectasis,400.5,100.25,50,60,,,
";

#[test]
fn nih_data_entry_parses_exactly() {
    let rows = cxr8::parse_data_entry(DATA_ENTRY, "Data_Entry_2017.csv").unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].image, "00000001_000.png");
    assert_eq!(rows[0].findings, ["Cardiomegaly"]);
    assert_eq!((rows[0].patient_age, rows[1].patient_age), (Some(58), Some(58)));
    assert_eq!(rows[0].original_size, Some([2682, 2749]));
    assert_eq!(rows[0].original_pixel_spacing, Some([0.143, 0.143]));
    assert_eq!(rows[0].view_position.as_deref(), Some("PA"));
    assert_eq!((rows[0].follow_up, rows[0].patient_id), (Some(0), Some(1)));
    assert!(rows[2].findings.is_empty(), "No Finding is no finding");
    assert_eq!(rows[3].findings, ["Emphysema", "Infiltration", "Pleural_Thickening", "Pneumothorax"]);
}

#[test]
fn nih_box_list_parses_exactly() {
    let rows = cxr8::parse_bbox_list(BBOX_LIST, "BBox_List_2017.csv").unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].bbox, BoundingBox { x: 225.084745762712, y: 547.019216763771, w: 86.7796610169491, h: 79.1864406779661 });
    assert_eq!(rows[2].finding, "Infiltration", "Infiltrate and Infiltration are one disease");
    let by_image = cxr8::boxes_by_image(&rows);
    assert_eq!(by_image["00013118_008.png"]["Atelectasis"].len(), 2);
    assert!(cxr8::BOXED_DISEASES.contains(&rows[2].finding.as_str()));
    // The authors worked at 512 × 512: boxes scaled by 1/2.
    let half = rows[3].bbox.scaled([1024, 1024], [512, 512]);
    assert_eq!(half, BoundingBox { x: 200.25, y: 50.125, w: 25.0, h: 30.0 });
}

#[test]
fn bad_tables_name_the_file_and_the_problem() {
    let missing = cxr8::parse_data_entry("Image Index,Patient ID\n00000001_000.png,1\n", "entries.csv");
    assert!(matches!(&missing, Err(Error::InvalidData(m)) if m.contains("entries.csv") && m.contains("Finding Labels")), "{missing:?}");
    let bad_number = cxr8::parse_bbox_list("Image Index,Finding Label,Bbox [x,y,w,h]\na.png,Mass,1,2,x,4\n", "boxes.csv");
    assert!(matches!(&bad_number, Err(Error::InvalidData(m)) if m.contains("boxes.csv:2") && m.contains("\"x\"")), "{bad_number:?}");
    let degenerate = cxr8::parse_bbox_list("Image Index,Finding Label,Bbox [x,y,w,h]\na.png,Mass,1,2,0,4\n", "boxes.csv");
    assert!(matches!(degenerate, Err(Error::InvalidData(_))));
    let short_row = cxr8::parse_bbox_list("Image Index,Finding Label,Bbox [x,y,w,h]\na.png,Mass,1,2\n", "boxes.csv");
    assert!(matches!(short_row, Err(Error::InvalidData(_))));
    let empty = cxr8::parse_data_entry("", "empty.csv");
    assert!(matches!(&empty, Err(Error::InvalidData(m)) if m.contains("empty.csv")));
    let missing_file = cxr8::read_bbox_list(std::path::Path::new("/nonexistent/BBox_List_2017.csv"));
    assert!(matches!(missing_file, Err(Error::Io { .. })));

    let outside = auc_pr(&[0.5; 16], 4, 4, &[BoundingBox { x: 5.0, y: 0.0, w: 2.0, h: 2.0 }], "00000001_000.png");
    assert!(matches!(&outside, Err(Error::InvalidData(m)) if m.contains("00000001_000.png") && m.contains("outside")), "{outside:?}");
    let short_map = auc_pr(&[0.5; 15], 4, 4, &[], "x");
    assert!(matches!(short_map, Err(Error::InvalidArgument(_))));
}

#[test]
fn the_synthetic_set_reads_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let options = diffmine::synthetic::SyntheticOptions { images_per_label: 2, size: 32, ..Default::default() };
    let out = dir.path().join("set");
    diffmine::synthetic::write_dataset(&options, &out).unwrap();
    let entries = cxr8::read_data_entry(&out.join("Data_Entry_2017.csv")).unwrap();
    let boxes = cxr8::read_bbox_list(&out.join("BBox_List_2017.csv")).unwrap();
    assert_eq!(entries.len(), options.image_count());
    assert_eq!(boxes.len(), options.image_count());
    for b in &boxes {
        let entry = entries.iter().find(|e| e.image == b.image).expect("every boxed image has a data entry");
        assert_eq!(entry.findings, std::slice::from_ref(&b.finding));
        let map = vec![0.5f32; 32 * 32];
        assert!(auc_pr(&map, 32, 32, &[b.bbox], &b.image).unwrap().is_some(), "{b:?} holds a pixel centre");
    }
}

/// Random maps and boxes: uniform scores, scores spread over the authors' threshold range, scores
/// with many ties, and maps brighter inside the boxes; boxes partly outside and sub-pixel ones too.
fn random_cases(count: usize) -> Vec<(usize, usize, Vec<f32>, Vec<BoundingBox>)> {
    let mut rng = SplitMix64::new(6);
    (0..count)
        .map(|i| {
            let (width, height) = (8 + rng.below(40) as usize, 8 + rng.below(40) as usize);
            let boxes: Vec<BoundingBox> = (0..1 + rng.below(3))
                .map(|_| {
                    let tiny = rng.uniform() < 0.1;
                    let (w, h) = if tiny { (0.4, 0.4) } else { (1.0 + rng.uniform() * width as f64 / 2.0, 1.0 + rng.uniform() * height as f64 / 2.0) };
                    BoundingBox { x: rng.uniform() * (width as f64 + w) - w * 0.9, y: rng.uniform() * (height as f64 + h) - h * 0.9, w, h }
                })
                .collect();
            let inside = positive_mask(&boxes, width, height);
            let map = (0..width * height)
                .map(|p| {
                    let u = rng.uniform();
                    (match i % 4 {
                        0 => u,
                        1 => 10f64.powf(-8.0 + 7.0 * u),
                        2 => (u * 5.0).floor() * 0.004,
                        _ => 1e-4 * (u + if inside[p] { 0.7 } else { 0.0 }),
                    }) as f32
                })
                .collect();
            (width, height, map, boxes)
        })
        .collect()
}

fn python() -> PathBuf {
    std::env::var_os("DIFFMINE_VENV").map(PathBuf::from).unwrap_or_else(|| common::repo_root().join(".deps/venv")).join("bin/python")
}

#[test]
fn auc_pr_matches_scikit_learn_and_the_numpy_curve() {
    let cases = random_cases(64);
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<Value> = cases
        .iter()
        .map(|(w, h, map, boxes)| {
            json!({"width": w, "height": h, "map": map.iter().map(|&v| v as f64).collect::<Vec<_>>(), "boxes": boxes.iter().map(|b| [b.x, b.y, b.w, b.h]).collect::<Vec<_>>()})
        })
        .collect();
    let (cases_path, out_path) = (dir.path().join("cases.json"), dir.path().join("out.json"));
    std::fs::write(&cases_path, serde_json::to_string(&input).unwrap()).unwrap();
    let status = Command::new(python()).arg(common::repo_root().join("tests/reference/cxr8_reference.py")).arg(&cases_path).arg(&out_path).status().unwrap();
    assert!(status.success(), "cxr8_reference.py failed (run scripts/setup.sh)");
    let reference: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();

    let (mut checked, mut without_positives, mut max_ap_error, mut max_area_error) = (0, 0, 0f64, 0f64);
    for ((w, h, map, boxes), expected) in cases.iter().zip(&reference) {
        let mask = positive_mask(boxes, *w, *h);
        let expected_mask: Vec<bool> = expected["mask"].as_array().unwrap().iter().map(|v| v.as_i64() == Some(1)).collect();
        assert_eq!(mask, expected_mask, "positive pixels differ");
        let ap = average_precision(map, &mask).unwrap();
        let curve = authors_curve(map, &mask).unwrap();
        match (&expected["average_precision"], ap, curve) {
            (Value::Null, None, None) => without_positives += 1,
            (theirs, Some(ap), Some(curve)) => {
                max_ap_error = max_ap_error.max((ap - theirs.as_f64().unwrap()).abs());
                let authors = &expected["authors"];
                for (ours, key) in [(&curve.precision, "precision"), (&curve.recall, "recall")] {
                    let theirs: Vec<f64> = authors[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                    assert!(ours.iter().zip(&theirs).all(|(a, b)| (a - b).abs() <= 1e-12), "the authors' {key} differs");
                }
                max_area_error = max_area_error.max((curve.area - authors["area"].as_f64().unwrap()).abs());
                checked += 1;
            }
            (theirs, ap, _) => panic!("positives disagree: scikit-learn {theirs}, ours {ap:?}"),
        }
    }
    println!("{checked} maps checked ({without_positives} without positive pixels): max |ΔAP| {max_ap_error:.1e}, max |Δarea| {max_area_error:.1e}");
    assert!(max_ap_error <= 1e-9, "average precision differs from scikit-learn by {max_ap_error:.1e}");
    assert!(max_area_error <= 1e-9, "the authors' area differs from NumPy by {max_area_error:.1e}");
    assert!(checked >= 50 && without_positives >= 1, "the cases cover both kinds ({checked}, {without_positives})");
}

#[test]
fn auc_pr_through_the_c_api() {
    use diffmine::ffi::{dm_cxr8_auc_pr, dm_status};
    // A 4×4 map brightest exactly on the box [1, 3) × [1, 3): a perfect ranking.
    let mut map = [0.001f32; 16];
    for (y, x) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
        map[y * 4 + x] = 0.01;
    }
    let boxes = [1.0, 1.0, 2.0, 2.0];
    let (mut ap, mut area) = (0.0, 0.0);
    // SAFETY: valid buffers and outputs.
    unsafe {
        assert_eq!(dm_cxr8_auc_pr(map.as_ptr(), 16, 4, 4, boxes.as_ptr(), 4, &mut ap, &mut area), dm_status::DM_OK);
        assert_eq!(ap, 1.0);
        assert!(area > 0.0 && area <= 1.0);
        let tiny = [1.1, 1.1, 0.2, 0.2];
        assert_eq!(dm_cxr8_auc_pr(map.as_ptr(), 16, 4, 4, tiny.as_ptr(), 4, &mut ap, &mut area), dm_status::DM_OK);
        assert!(ap.is_nan() && area.is_nan(), "no pixel centre inside: undefined");
        let outside = [9.0, 0.0, 1.0, 1.0];
        assert_eq!(dm_cxr8_auc_pr(map.as_ptr(), 16, 4, 4, outside.as_ptr(), 4, &mut ap, &mut area), dm_status::DM_ERR_INVALID_DATA);
        assert_eq!(dm_cxr8_auc_pr(map.as_ptr(), 16, 4, 4, boxes.as_ptr(), 3, &mut ap, &mut area), dm_status::DM_ERR_INVALID_ARGUMENT);
        assert_eq!(dm_cxr8_auc_pr(map.as_ptr(), 15, 4, 4, boxes.as_ptr(), 4, &mut ap, &mut area), dm_status::DM_ERR_INVALID_ARGUMENT);
        assert_eq!(dm_cxr8_auc_pr(std::ptr::null(), 16, 4, 4, boxes.as_ptr(), 4, &mut ap, &mut area), dm_status::DM_ERR_NULL_ARGUMENT);
    }
}

/// The whole evaluation on a generated ChestX-ray8-like set (PNG images, both CSVs in NIH's formats)
/// with the tiny random-weight fixture as both models: the figures are meaningless, the plumbing is
/// what is checked (results per image and disease, report files, overlays, cancellation).
#[test]
fn evaluation_end_to_end_on_a_synthetic_set() {
    use diffmine::cxr8::{evaluate, EvaluationOptions, Report};
    use diffmine::model::{ModelOptions, StableDiffusion};

    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let options = diffmine::synthetic::SyntheticOptions { images_per_label: 1, size: 32, ..Default::default() };
    let summary = diffmine::synthetic::write_dataset(&options, &set).unwrap();
    // The images sit in one folder per label: found by their box-list names in subfolders, as in
    // NIH's images_001/images/ … layout.
    let images = set.clone();
    assert!(summary.entries.iter().all(|e| e.path.parent().is_some_and(|p| !p.as_os_str().is_empty())));
    let boxes = cxr8::read_bbox_list(&set.join("BBox_List_2017.csv")).unwrap();
    let model = StableDiffusion::open(&common::pipeline("sd15_tiny"), &ModelOptions::default()).unwrap();
    let eval_options = EvaluationOptions { working_size: 32, samples: 2, batch: 2, limit: Some(3), ..Default::default() };

    let mut calls = Vec::new();
    let evaluation = evaluate(&model, Some(&model), &images, &boxes, &eval_options, &mut |done, total| {
        calls.push((done, total));
        true
    })
    .unwrap();
    assert_eq!(calls.last(), Some(&(6, 6)), "two maps for each of three pairs");
    assert_eq!(evaluation.results.len(), 3);
    for r in &evaluation.results {
        let (ft, pt) = (r.finetuned.unwrap(), r.baseline.unwrap());
        assert!((0.0..=1.0).contains(&ft.average_precision) && (0.0..=1.0).contains(&ft.authors_area));
        assert_eq!(ft, pt, "the same model and seed give the same figures");
    }
    let report = Report::from_results(&evaluation.results);
    assert!(report.rows.iter().all(|row| row.difference == Some(0.0)));
    let out = dir.path().join("out");
    report.write(&evaluation.results, &out).unwrap();
    for name in ["report.md", "report.csv", "report.json"] {
        assert!(out.join(name).is_file(), "{name}");
    }
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["images"].as_array().unwrap().len(), 3);
    let overlays = evaluation.write_overlays(&out.join("overlays")).unwrap();
    assert_eq!(overlays.len(), 2 * report.rows.len());
    assert_eq!(image::open(&overlays[0]).unwrap().width(), 32);

    let cancelled = evaluate(&model, None, &images, &boxes, &eval_options, &mut |_, _| false);
    assert!(matches!(cancelled, Err(Error::Cancelled)));

    let unknown = [cxr8::BoxEntry { image: "99999999_000.png".into(), ..boxes[0].clone() }];
    let missing = evaluate(&model, None, &images, &unknown, &eval_options, &mut |_, _| true).map(|e| e.results.len());
    assert!(matches!(&missing, Err(Error::InvalidData(m)) if m.contains("no image named 99999999_000.png")), "{missing:?}");
}

/// One check of a box on every path: a box of infinite or astronomically large size is refused from
/// NIH's list and from a caller alike, with the same words.
#[test]
fn boxes_are_checked_alike_from_the_box_list_and_from_a_caller() {
    use diffmine::ffi::{dm_cxr8_auc_pr, dm_status};
    let from_csv = cxr8::parse_bbox_list("Image Index,Finding Label,Bbox [x,y,w,h]\na.png,Mass,1,2,inf,4\n", "boxes.csv");
    assert!(matches!(&from_csv, Err(Error::InvalidData(m)) if m.contains("boxes.csv:2") && m.contains("is not a box")), "{from_csv:?}");
    let map = [0.5f32; 16];
    let (mut ap, mut area) = (0.0, 0.0);
    for (boxes, problem) in
        [([1.0, 1.0, f64::INFINITY, 2.0], "is not a box"), ([1.0, 1.0, 1e308, 2.0], "reaches far beyond"), ([1.0, 1.0, 2.0, f64::NAN], "is not a box")]
    {
        // SAFETY: valid buffers and outputs.
        let status = unsafe { dm_cxr8_auc_pr(map.as_ptr(), 16, 4, 4, boxes.as_ptr(), 4, &mut ap, &mut area) };
        assert_eq!(status, dm_status::DM_ERR_INVALID_DATA, "{boxes:?}");
        assert!(common::c_last_error().contains(problem), "{boxes:?}: {}", common::c_last_error());
    }
}

/// Table files that are not what they claim: text that is not UTF-8 is invalid data (the file was
/// read), and a quote left open is reported as such, with its line.
#[test]
fn non_utf8_tables_and_unbalanced_quotes_are_invalid_data_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let latin1 = dir.path().join("BBox_List_2017.csv");
    std::fs::write(&latin1, b"Image Index,Finding Label,Bbox [x,y,w,h]\na.png,Mass\xe9,1,2,3,4\n").unwrap();
    let read = cxr8::read_bbox_list(&latin1);
    assert!(matches!(&read, Err(Error::InvalidData(m)) if m.contains("BBox_List_2017.csv:2") && m.contains("UTF-8")), "{read:?}");
    let entries = cxr8::read_data_entry(&latin1);
    assert!(matches!(&entries, Err(Error::InvalidData(_))), "{entries:?}");
    let quote = cxr8::parse_bbox_list("Image Index,Finding Label,Bbox [x,y,w,h]\na.png,Mass,1,2,3,4\n\"b.png,Mass,1,2,3,4\n", "boxes.csv");
    assert!(matches!(&quote, Err(Error::InvalidData(m)) if m.contains("boxes.csv:3") && m.contains("unbalanced quote")), "{quote:?}");
}

/// The evaluation refuses, before any work or any file, a report folder path that is empty (it
/// would write into the current folder) and a disease ChestX-ray8 has no boxes for (it would write
/// an empty report), through the C API as through Rust.
#[test]
fn an_empty_report_path_or_an_unknown_disease_is_refused_before_any_work() {
    use std::ffi::CString;
    use std::ptr::{null, null_mut};

    use diffmine::ffi::{dm_cxr8_evaluate, dm_cxr8_options, dm_cxr8_options_default, dm_status};
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let options = diffmine::synthetic::SyntheticOptions { images_per_label: 1, size: 32, ..Default::default() };
    diffmine::synthetic::write_dataset(&options, &set).unwrap();
    let model = common::CModel::open(&common::pipeline("sd15_tiny"));
    let c = |s: &std::path::Path| CString::new(s.to_str().unwrap()).unwrap();
    let (images, boxes, out) = (c(&set), c(&set.join("BBox_List_2017.csv")), c(&dir.path().join("out")));
    let (empty, missing_boxes) = (CString::new("").unwrap(), c(&dir.path().join("absent.csv")));
    // SAFETY: zeroed, then filled by the library.
    let mut o: dm_cxr8_options = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    assert_eq!(unsafe { dm_cxr8_options_default(&mut o) }, dm_status::DM_OK);
    (o.working_size, o.samples, o.batch, o.limit) = (32, 2, 2, 1);
    // SAFETY: valid handle, strings and options; no progress callback.
    let run = |boxes: &CString, out: &CString, o: &dm_cxr8_options| unsafe {
        dm_cxr8_evaluate(model.0, null(), images.as_ptr(), boxes.as_ptr(), null(), out.as_ptr(), o, None, null_mut())
    };
    // The box list is absent too: the path must be refused before the tables are read.
    assert_eq!(run(&missing_boxes, &empty, &o), dm_status::DM_ERR_INVALID_ARGUMENT, "{}", common::c_last_error());
    assert!(common::c_last_error().contains("path is empty"), "{}", common::c_last_error());
    let unknown = CString::new("Mass,Fracture").unwrap();
    o.diseases = unknown.as_ptr();
    assert_eq!(run(&boxes, &out, &o), dm_status::DM_ERR_INVALID_ARGUMENT);
    assert!(common::c_last_error().contains("unknown disease \"Fracture\""), "{}", common::c_last_error());
    assert!(!dir.path().join("out").exists(), "no report for an unknown disease");
    // The box list's own name for a disease is one of them.
    let infiltrate = CString::new("Infiltrate").unwrap();
    o.diseases = infiltrate.as_ptr();
    assert_eq!(run(&boxes, &out, &o), dm_status::DM_OK, "{}", common::c_last_error());
}

/// The same evaluation over DICOM copies of the images, named `<stem>.dcm` where the box list says
/// `<stem>.png`: the images are found by their stem and, their pixels being the PNGs', give the same
/// figures.
#[test]
fn an_evaluation_over_dicom_copies_finds_them_by_stem_and_gives_the_pngs_figures() {
    use diffmine::cxr8::{evaluate, EvaluationOptions};
    use diffmine::model::{ModelOptions, StableDiffusion};
    let dir = tempfile::tempdir().unwrap();
    let options = diffmine::synthetic::SyntheticOptions { images_per_label: 1, size: 32, ..Default::default() };
    diffmine::synthetic::write_dataset(&options, &dir.path().join("png")).unwrap();
    diffmine::synthetic::write_dicom_copies(&options, &dir.path().join("dcm")).unwrap();
    let boxes = cxr8::read_bbox_list(&dir.path().join("png/BBox_List_2017.csv")).unwrap();
    let model = StableDiffusion::open(&common::pipeline("sd15_tiny"), &ModelOptions::default()).unwrap();
    let eval_options = EvaluationOptions { working_size: 32, samples: 2, batch: 2, limit: Some(3), ..Default::default() };
    let run = |folder: &str| evaluate(&model, None, &dir.path().join(folder), &boxes, &eval_options, &mut |_, _| true).unwrap().results;
    let (png, dcm) = (run("png"), run("dcm"));
    assert_eq!(png.len(), 3);
    for (p, d) in png.iter().zip(&dcm) {
        assert_eq!((&p.image, &p.disease), (&d.image, &d.disease));
        assert_eq!(p.finetuned, d.finetuned, "{}", p.image);
    }
}

/// A report written onto a full disk fails with the operating system's reason and leaves the report
/// already there whole, with no temporary beside it.
#[test]
fn a_report_written_onto_a_full_disk_leaves_the_old_report_whole() {
    use diffmine::cxr8::{AucPr, ImageResult, Report};
    let Some(disk) = common::SmallDisk::mount(64) else { return };
    let figures = Some(AucPr { average_precision: 0.5, authors_area: 0.25 });
    let results = [ImageResult { image: "a.png".into(), disease: "Mass".into(), finetuned: figures, baseline: None }];
    let report = Report::from_results(&results);
    let out = disk.path().join("report");
    report.write(&results, &out).unwrap();
    let before = std::fs::read(out.join("report.md")).unwrap();
    disk.fill();
    let err = report.write(&results, &out).unwrap_err();
    assert!(matches!(&err, Error::Io { message, .. } if message.contains("No space left on device")), "{err:?}");
    assert_eq!(std::fs::read(out.join("report.md")).unwrap(), before);
    let mut names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["report.csv", "report.json", "report.md"], "no temporary left");
}
