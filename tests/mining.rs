//! Mining: DIFT features against Tang et al.'s computation in diffusers (same noise), f32 on CPU.
mod common;

use common::{assert_close, pipeline, Reference};
use diffmine::mining::cluster::{kmeans, ClusterOptions};
use diffmine::mining::dift::{dift_features, DiftOptions};
use diffmine::model::{ModelOptions, StableDiffusion};
use diffmine::typicality::LatentMode;

#[test]
fn dift_features_equal_the_up_block_output_of_diffusers_averaged_over_the_ensemble() {
    for config in ["sd15_tiny", "sd2_tiny"] {
        let model = StableDiffusion::open(&pipeline(config), &ModelOptions::default()).unwrap();
        let reference = Reference::load(config);
        let noise = reference.get("dift.noise").shallow_clone();
        let options = DiftOptions { ensemble: noise.size()[0] as usize, latent: LatentMode::Mean, noise: Some(noise), ..DiftOptions::default() };
        let prompt = reference.json["typicality_prompts"][0].as_str().unwrap().to_string();
        let features = dift_features(&model, reference.get("vae.0.image"), &prompt, &options).unwrap();
        assert_close(&features, reference.get("dift.features"), 1e-4, &format!("{config} DIFT"));
    }
}

#[test]
fn kmeans_inertia_is_within_one_percent_of_scikit_learns_with_ten_restarts() {
    let reference = Reference::load("sd15_tiny");
    let data = reference.get("kmeans.data");
    let (n, d) = data.size2().unwrap();
    let values = Vec::<f32>::try_from(&data.flatten(0, -1)).unwrap();
    let features = ndarray::Array2::from_shape_vec((n as usize, d as usize), values).unwrap();
    let options = ClusterOptions { clusters: 8, restarts: 10, ..ClusterOptions::default() };
    let ours = kmeans(&features, &options).unwrap().inertia;
    let theirs = reference.get("kmeans.inertia").double_value(&[0]);
    assert!((ours - theirs).abs() <= 0.01 * theirs, "inertia {ours:.4} vs scikit-learn {theirs:.4}");
}

mod pipeline {
    use std::path::Path;

    use super::common::pipeline;
    use diffmine::dataset::LabelledSet;
    use diffmine::mining::cluster::ClusterOptions;
    use diffmine::mining::dift::DiftOptions;
    use diffmine::mining::miner::{mine, LabelResult, MiningOptions};
    use diffmine::mining::report::{write_comparison, write_report, ReportOptions};
    use diffmine::model::{ModelOptions, StableDiffusion};
    use diffmine::synthetic::{write_dataset, SyntheticOptions};
    use diffmine::typicality::TypicalityOptions;

    fn small_options(cache: &Path, clusters: usize) -> MiningOptions {
        MiningOptions {
            prompt_template: "Chest X-Ray with {label}.".into(),
            null_prompt: "Chest X-Ray.".into(),
            typicality: TypicalityOptions { samples: 2, batch: 2, ..TypicalityOptions::default() },
            patch_size: 16,
            top: 12,
            dift: DiftOptions { ensemble: 2, ..DiftOptions::default() },
            cluster: ClusterOptions { clusters, restarts: 2, ..ClusterOptions::default() },
            cache_dir: Some(cache.to_path_buf()),
            ..MiningOptions::default()
        }
    }

    fn run(model: &StableDiffusion, set: &LabelledSet, options: &MiningOptions) -> Vec<LabelResult> {
        mine(model, set, options, &mut |_, _| true).unwrap()
    }

    /// Generated Nodule and Effusion images of the generator's default 64 px.
    fn nodule_and_effusion(images_per_label: usize) -> SyntheticOptions {
        SyntheticOptions { images_per_label, labels: vec!["Nodule".into(), "Effusion".into()], ..SyntheticOptions::default() }
    }

    /// Such a set written to a temporary folder (dropped with the guard) and opened.
    fn written_set(images_per_label: usize) -> (tempfile::TempDir, LabelledSet) {
        let data = tempfile::tempdir().unwrap();
        write_dataset(&nodule_and_effusion(images_per_label), data.path()).unwrap();
        let set = LabelledSet::open(data.path()).unwrap();
        (data, set)
    }

    fn tiny_model() -> StableDiffusion {
        StableDiffusion::open(&pipeline("sd15_tiny"), &ModelOptions::default()).unwrap()
    }

    fn cache_entries(dir: &Path, kind: &str) -> usize {
        std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(kind)).count()
    }

    #[test]
    fn the_cache_keeps_the_maps_of_each_way_of_drawing_the_samples_apart() {
        let (_data, set) = written_set(1);
        let model = tiny_model();
        let cache = tempfile::tempdir().unwrap();
        let plain = small_options(cache.path(), 1);
        run(&model, &set, &plain);
        assert_eq!(cache_entries(cache.path(), "typicality"), 2);

        let paired = |cache_dir| {
            let mut options = small_options(cache.path(), 1);
            (options.typicality.antithetic, options.typicality.stratified, options.cache_dir) = (true, true, cache_dir);
            options
        };
        let from_cache_folder = run(&model, &set, &paired(Some(cache.path().to_path_buf())));
        assert_eq!(cache_entries(cache.path(), "typicality"), 4, "the paired draws' maps are new entries");
        let uncached = run(&model, &set, &paired(None));
        let scores =
            |r: &[LabelResult]| r.iter().flat_map(|l| l.patches.iter().map(|p| (p.path.clone(), p.patch.x, p.patch.y, p.patch.score))).collect::<Vec<_>>();
        assert_eq!(scores(&from_cache_folder), scores(&uncached));
    }

    #[test]
    fn mining_ranks_clusters_reuses_its_cache_and_writes_a_report_without_dead_links() {
        let (_data, set) = written_set(3);
        let model = tiny_model();
        let work = tempfile::tempdir().unwrap();
        let cache = work.path().join("cache");

        let results = run(&model, &set, &small_options(&cache, 3));
        assert_eq!(results.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(), vec!["Effusion", "Nodule"]);
        for r in &results {
            assert_eq!(r.patches.len(), 12, "top 12 of 3 images × 5 boxes");
            let t = r.times;
            assert!([t.typicality, t.patches, t.dift, t.clustering].iter().all(|d| !d.is_zero()), "every stage timed: {t:?}");
            let medians: Vec<f32> = r.clusters.iter().map(|c| c.median_typicality).collect();
            assert!(medians.windows(2).all(|w| w[0] >= w[1]), "clusters by median typicality: {medians:?}");
            for c in &r.clusters {
                let d: Vec<f32> = c.members.iter().map(|&m| r.patches[m].distance).collect();
                assert!(d.windows(2).all(|w| w[0] <= w[1]), "members closest first");
            }
        }
        let (maps, features) = (cache_entries(&cache, "typicality"), cache_entries(&cache, "dift"));
        assert_eq!(maps, 6);

        // Other clustering settings: everything upstream comes from the cache, and the boxes are the same.
        let again = run(&model, &set, &small_options(&cache, 2));
        assert_eq!((cache_entries(&cache, "typicality"), cache_entries(&cache, "dift")), (maps, features));
        let boxes = |r: &[LabelResult]| {
            let mut b: Vec<_> = r.iter().flat_map(|l| l.patches.iter().map(|p| (p.path.clone(), p.patch.x, p.patch.y))).collect();
            b.sort();
            b
        };
        assert_eq!(boxes(&results), boxes(&again));

        let report = work.path().join("report");
        write_report(&results, &ReportOptions { min_members: 1, ..ReportOptions::default() }, &report).unwrap();
        let html = std::fs::read_to_string(report.join("index.html")).unwrap();
        let links: Vec<&str> = html.split(['"']).filter(|s| [".png", ".jpg", ".csv"].iter().any(|e| s.ends_with(e))).collect();
        for label in ["Effusion", "Nodule"] {
            let sources = links.iter().filter(|l| l.starts_with(&format!("sources/{label}/"))).count();
            assert!(sources >= 2, "{label}: a source image and its heat map for each shown element: {links:?}");
        }
        for link in links {
            assert!(report.join(link).is_file(), "dead link {link}");
        }
        assert!(report.join("grid_Nodule.png").is_file() && report.join("grid_Effusion.png").is_file());
        let csv = std::fs::read_to_string(report.join("patches.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 24);

        // Two runs side by side (here the same model clustered two ways): each its own report, and a
        // page with one row per label and one column per run, linking into both.
        let comparison = work.path().join("comparison");
        let options = ReportOptions { min_members: 1, ..ReportOptions::default() };
        write_comparison(&[("three clusters", &results), ("two clusters", &again)], &options, &comparison).unwrap();
        let html = std::fs::read_to_string(comparison.join("index.html")).unwrap();
        let links: Vec<&str> = html.split(['"']).filter(|s| s.contains(".png") || s.contains(".html")).collect();
        assert_eq!(links.len(), 2 * 2 * 2, "per label and run, a grid and a link to the run's section: {links:?}");
        for link in links {
            let file = link.split('#').next().unwrap();
            assert!(comparison.join(file).is_file(), "dead link {link}");
        }
        assert!(comparison.join("three_clusters/index.html").is_file() && comparison.join("two_clusters/patches.csv").is_file());
    }

    /// A PACS export is DICOM: the synthetic set's DICOM copies (the PNGs' pixels, one folder per
    /// label) are listed as a labelled set by their content, whatever their names, and mine to the
    /// same patches with the same scores as the PNGs, and finetune to the same weights.
    #[test]
    fn a_set_of_dicom_copies_mines_and_finetunes_as_its_pngs() {
        use diffmine::finetune::{finetune, FinetuneOptions};
        use diffmine::synthetic::write_dicom_copies;
        let data = tempfile::tempdir().unwrap();
        let synthetic = nodule_and_effusion(2);
        write_dataset(&synthetic, &data.path().join("png")).unwrap();
        write_dicom_copies(&synthetic, &data.path().join("dcm")).unwrap();
        // A PACS names its files without an extension.
        let plain = std::fs::read_dir(data.path().join("dcm/Nodule")).unwrap().map(|e| e.unwrap().path()).min().unwrap();
        std::fs::rename(&plain, plain.with_extension("")).unwrap();
        let (png, dcm) = (LabelledSet::open(&data.path().join("png")).unwrap(), LabelledSet::open(&data.path().join("dcm")).unwrap());
        assert_eq!(dcm.items.len(), png.items.len());
        let model = tiny_model();
        let options = MiningOptions { cache_dir: None, ..small_options(data.path(), 2) };
        let patches = |results: Vec<LabelResult>| -> Vec<_> {
            results
                .iter()
                .flat_map(|r| r.patches.iter().map(|p| (r.label.clone(), p.path.file_stem().unwrap().to_owned(), p.patch.x, p.patch.y, p.patch.score)))
                .collect()
        };
        let from_png = patches(run(&model, &png, &options));
        assert!(!from_png.is_empty());
        assert_eq!(patches(run(&model, &dcm, &options)), from_png);

        let work = tempfile::tempdir().unwrap();
        let train = FinetuneOptions { steps: 2, batch_size: 2, resolution: 32, seed: 7, ..FinetuneOptions::default() };
        let weights = |set: &LabelledSet, out: &str| {
            let out = work.path().join(out);
            finetune(&pipeline("sd15_tiny"), &ModelOptions::default(), set, &train, None, &out, &mut |_, _, _| true).unwrap();
            super::common::sorted_tensors(&out.join("unet/diffusion_pytorch_model.safetensors"))
        };
        for ((name, a), (_, b)) in weights(&png, "png").iter().zip(&weights(&dcm, "dcm")) {
            assert!(a.equal(b), "{name} differs between the PNG and the DICOM set");
        }
    }

    /// The stages composed by hand, as a cluster runs them (images in a shuffled order, the best boxes
    /// chosen per block and then over the blocks' tops), give `mine`'s result exactly; an unreadable
    /// image is skipped and named by both.
    #[test]
    fn the_stages_composed_in_any_order_give_the_pipelines_result() {
        use diffmine::mining::miner::{box_features, cluster_patches, image_candidates, read_image};
        use diffmine::mining::patches::{top_patches, ImagePatch};
        use std::collections::BTreeMap;
        let data = tempfile::tempdir().unwrap();
        let synthetic = nodule_and_effusion(3);
        write_dataset(&synthetic, data.path()).unwrap();
        std::fs::write(data.path().join("Nodule/broken.png"), b"not a png").unwrap();
        let set = LabelledSet::open(data.path()).unwrap();
        let model = tiny_model();
        let options = MiningOptions { top: 9, cache_dir: None, ..small_options(data.path(), 3) };
        let mined = run(&model, &set, &options);
        let nodule = mined.iter().find(|r| r.label == "Nodule").unwrap();
        assert_eq!(nodule.skipped.len(), 1);
        assert!(nodule.skipped[0].path.ends_with("Nodule/broken.png"));

        for (round, expected) in mined.iter().enumerate() {
            let label = expected.label.as_str();
            let mut images: Vec<_> = set.items.iter().filter(|i| i.labels.iter().any(|l| l == label)).collect();
            // A different order each label: reversed, then rotated.
            images.reverse();
            images.rotate_left(round + 1);
            let mut candidates = BTreeMap::new();
            let mut skipped = Vec::new();
            for image in &images {
                match read_image(image, &options) {
                    Ok(input) => {
                        candidates.insert(image.path.clone(), image_candidates(&model, image, &input, label, &options).unwrap());
                    }
                    Err(_) => skipped.push(image.path.clone()),
                }
            }
            assert_eq!(skipped, expected.skipped.iter().map(|s| s.path.clone()).collect::<Vec<_>>());
            let boxes: Vec<ImagePatch<std::path::PathBuf>> = images
                .iter()
                .filter_map(|i| candidates.get(&i.path).map(|c| (i, c)))
                .flat_map(|(i, c)| c.boxes.iter().map(|&patch| ImagePatch { image: i.path.clone(), patch }))
                .collect();
            let block_tops: Vec<_> = boxes.chunks(3).flat_map(|block| top_patches(block.to_vec(), options.top)).collect();
            let kept = top_patches(block_tops, options.top);
            // Features fetched per image, the images in yet another order.
            let mut rows: Vec<(ImagePatch<std::path::PathBuf>, Vec<f32>)> = Vec::new();
            for image in images.iter().rev() {
                let mine: Vec<_> = kept.iter().filter(|p| p.image == image.path).cloned().collect();
                if !mine.is_empty() {
                    let features = box_features(&model, image, &mine.iter().map(|p| p.patch).collect::<Vec<_>>(), label, &options).unwrap();
                    rows.extend(mine.into_iter().zip(features.rows().into_iter().map(|r| r.to_vec())));
                }
            }
            let dim = rows[0].1.len();
            let features = ndarray::Array2::from_shape_vec((rows.len(), dim), rows.iter().flat_map(|r| r.1.clone()).collect()).unwrap();
            let kept_in_arrival_order: Vec<_> = rows.into_iter().map(|r| r.0).collect();
            let clustered = cluster_patches(&kept_in_arrival_order, &features, &options.cluster).unwrap();
            assert_eq!(clustered.patches, expected.patches, "{label}: boxes, scores, clusters and distances");
            assert_eq!(clustered.clusters, expected.clusters, "{label}");
            for p in &expected.patches {
                assert_eq!(candidates[&p.path].map, expected.maps[&p.path], "{label}: the report's map of {}", p.path.display());
            }
        }
    }

    #[test]
    fn an_unreadable_image_is_an_error_naming_the_file() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("Mass")).unwrap();
        std::fs::write(data.path().join("Mass/broken.png"), b"not a png").unwrap();
        let set = LabelledSet::open(data.path()).unwrap();
        let model = tiny_model();
        let cache = tempfile::tempdir().unwrap();
        let err = mine(&model, &set, &small_options(cache.path(), 2), &mut |_, _| true).unwrap_err();
        assert!(err.to_string().contains("broken.png"), "{err}");
    }
}
