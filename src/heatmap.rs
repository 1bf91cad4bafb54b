//! The one colour convention for typicality heat maps, used wherever a map is drawn over its image
//! (the mining report, the ChestX-ray8 evaluation's overlays, the DICOM writer's colour overlay): the
//! map scaled to [0, 1] between its 1st and 99th percentiles, coloured with the `jet` scale (dark blue: the least
//! typical place of the image, dark red: the most typical) and blended half and half over the image.
//! `jet` is matplotlib's colour map of that name, entry for entry, so a map drawn here looks the same
//! as one drawn from Python.
use image::{imageops, ImageBuffer, Luma, Rgb, RgbImage};
use ndarray::Array2;

use crate::error::{Error, Result};

/// matplotlib's `jet` segment data per channel: (position, value) points, linear in between.
const JET: [&[(f64, f64)]; 3] = [
    &[(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)],
    &[(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)],
    &[(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)],
];

/// Entries of the colour table, as matplotlib's colour maps have by default.
const ENTRIES: usize = 256;

/// The colour of `level` (0: least typical, 1: most typical; clamped) as matplotlib's
/// `colormaps["jet"](level, bytes=True)` gives it: the level picks one of 256 table entries, each
/// the segment data interpolated at the entry, truncated to a byte.
pub fn jet(level: f64) -> [u8; 3] {
    let entry = ((level.clamp(0.0, 1.0) * ENTRIES as f64) as usize).min(ENTRIES - 1);
    JET.map(|points| (table_entry(points, entry).clamp(0.0, 1.0) * 255.0) as u8)
}

/// Entry `entry` of a channel's table, computed in the order matplotlib builds its tables (positions
/// scaled to entries first), so that values on a byte boundary truncate the same way.
fn table_entry(points: &[(f64, f64)], entry: usize) -> f64 {
    let last = (ENTRIES - 1) as f64;
    match entry {
        0 => points[0].1,
        e if e == ENTRIES - 1 => points[points.len() - 1].1,
        e => {
            let e = e as f64;
            let upper = points.iter().position(|&(p, _)| p * last >= e).unwrap_or(points.len() - 1).max(1);
            let ((x0, y0), (x1, y1)) = (points[upper - 1], points[upper]);
            (e - x0 * last) / (x1 * last - x0 * last) * (y1 - y0) + y0
        }
    }
}

/// The share of a map's values at each end that the colour scale clamps, so that a few extreme pixels
/// (a single very atypical spot is common) do not wash out the rest of the map.
const CLAMPED: f64 = 0.01;

/// `map` scaled to [0, 1] between its 1st and 99th percentiles (nearest rank, finite values only;
/// values beyond are clamped); a flat map is all 0 and a value that is not finite counts as the lowest.
fn levels(map: &[f32]) -> Vec<f64> {
    let mut finite: Vec<f32> = map.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return vec![0.0; map.len()];
    }
    let last = finite.len() - 1;
    let mut rank = |r: usize| *finite.select_nth_unstable_by(r, f32::total_cmp).1 as f64;
    let lo = rank((CLAMPED * last as f64).floor() as usize);
    let hi = rank((((1.0 - CLAMPED) * last as f64).ceil() as usize).min(last));
    map.iter().map(|&v| if hi > lo && v.is_finite() { ((v as f64 - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.0 }).collect()
}

/// The map coloured with [`jet`] and blended half and half over `image`: each channel
/// round((image + colour) / 2). `map` holds one value per pixel, row-major.
pub fn overlay(image: &RgbImage, map: &[f32]) -> Result<RgbImage> {
    let (width, height) = image.dimensions();
    if map.len() != width as usize * height as usize {
        return Err(Error::InvalidArgument(format!("a heat map of {} values for a {width}×{height} image", map.len())));
    }
    let levels = levels(map);
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let colour = jet(levels[y as usize * width as usize + x as usize]);
        let pixel = image.get_pixel(x, y).0;
        Rgb(std::array::from_fn(|c| (pixel[c] as u16 + colour[c] as u16).div_ceil(2) as u8))
    }))
}

/// [`overlay`] of a map of any size, first resized to the image's size (bilinear).
pub fn overlay_resized(image: &RgbImage, map: &Array2<f32>) -> Result<RgbImage> {
    let (height, width) = map.dim();
    let (w, h) = image.dimensions();
    let values = resize(map.iter().copied().collect(), height, width, h as usize, w as usize);
    overlay(image, &values)
}

/// `map` (`height` × `width`, row-major) reduced so that its longer side is at most `longest`
/// (bilinear; a smaller map is kept as it is): typicality maps are bilinear upsamplings of a map eight
/// times coarser than the image, so a reduced map loses little of them and costs far less to keep.
pub fn reduced(map: &[f32], height: usize, width: usize, longest: usize) -> Array2<f32> {
    let scale = (longest as f64 / height.max(width) as f64).min(1.0);
    let side = |s: usize| ((s as f64 * scale).round() as usize).max(1);
    let (h, w) = (side(height), side(width));
    Array2::from_shape_vec((h, w), resize(map.to_vec(), height, width, h, w)).expect("h × w values")
}

/// `values` (`height` × `width`, row-major) resampled to `new_height` × `new_width` (bilinear).
pub(crate) fn resize(values: Vec<f32>, height: usize, width: usize, new_height: usize, new_width: usize) -> Vec<f32> {
    if (height, width) == (new_height, new_width) {
        return values;
    }
    // The image crate clamps float pixels to [0, 1] while resampling, so resample in that range.
    let (lo, hi) = values.iter().filter(|v| v.is_finite()).fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let lo = if lo.is_finite() { lo } else { 0.0 };
    let unit: Vec<f32> = values.iter().map(|&v| if v.is_finite() { (v - lo) / span } else { 0.0 }).collect();
    let map = ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(width as u32, height as u32, unit).expect("height × width values");
    let resized = imageops::resize(&map, new_width as u32, new_height as u32, imageops::FilterType::Triangle);
    resized.into_raw().into_iter().map(|v| lo + v * span).collect()
}

/// A horizontal colour bar of the scale, `width` × `height`, least typical on the left.
pub fn legend(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, _| Rgb(jet((x as f64 + 0.5) / width as f64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `matplotlib.colormaps["jet"](levels, bytes=True)[:, :3]` from matplotlib 3.11.2.
    #[test]
    fn jet_equals_matplotlibs_colour_map() {
        let levels = [0.0, 0.1, 0.125, 0.25, 0.3, 0.379, 0.5, 0.6, 0.62, 0.75, 0.9, 0.95, 1.0];
        let matplotlib = [
            [0, 0, 127],
            [0, 0, 241],
            [0, 0, 255],
            [0, 128, 255],
            [0, 176, 255],
            [24, 255, 221],
            [124, 255, 121],
            [205, 255, 41],
            [221, 255, 24],
            [255, 148, 0],
            [241, 7, 0],
            [182, 0, 0],
            [127, 0, 0],
        ];
        for (level, expected) in levels.iter().zip(matplotlib) {
            assert_eq!(jet(*level), expected, "level {level}");
        }
        assert_eq!(jet(-3.0), jet(0.0));
        assert_eq!(jet(7.0), jet(1.0));
    }

    #[test]
    fn the_overlay_blends_the_scaled_map_half_and_half() {
        let image = RgbImage::from_fn(3, 1, |x, _| Rgb([10 * x as u8, 100, 200]));
        // Range 2..6: levels 0, 1 and 0.5; a NaN counts as the lowest.
        let out = overlay(&image, &[2.0, 6.0, 4.0]).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [0, 50, 164]);
        assert_eq!(out.get_pixel(1, 0).0, [69, 50, 100]);
        assert_eq!(out.get_pixel(2, 0).0, [72, 178, 161]);
        assert_eq!(overlay(&image, &[f32::NAN, 6.0, 2.0]).unwrap().get_pixel(0, 0), out.get_pixel(0, 0));
        assert_eq!(overlay(&image, &[1.0; 3]).unwrap().get_pixel(2, 0).0, [10, 50, 164], "a flat map is all lowest");
        assert!(matches!(overlay(&image, &[1.0; 2]), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn a_few_extreme_values_do_not_wash_out_the_scale() {
        // 0..=199 and two far outliers: the scale spans the 1st to the 99th percentile (the 0-based
        // ranks 2 and 199 of the 202 values: 1 and 198), the outliers are clamped to its ends.
        let mut map: Vec<f32> = (0..200).map(|v| v as f32).collect();
        map.extend([-1e6, 1e6]);
        let levels = levels(&map);
        assert_eq!(levels[1], 0.0);
        assert_eq!(levels[198], 1.0);
        assert!((levels[100] - 99.0 / 197.0).abs() < 1e-12);
        assert_eq!((levels[200], levels[201]), (0.0, 1.0));
    }

    #[test]
    fn reduced_maps_keep_their_shape_and_range() {
        let map: Vec<f32> = (0..64 * 32).map(|i| (i % 32) as f32).collect();
        let small = reduced(&map, 64, 32, 16);
        assert_eq!(small.dim(), (16, 8));
        assert!(small.iter().all(|&v| (0.0..=31.0).contains(&v)));
        assert!(small[[3, 0]] < small[[3, 7]], "increasing along a row");
        assert_eq!(reduced(&map, 64, 32, 100).dim(), (64, 32));
        let image = RgbImage::new(32, 64);
        assert_eq!(overlay_resized(&image, &small).unwrap().dimensions(), (32, 64));
    }
}
