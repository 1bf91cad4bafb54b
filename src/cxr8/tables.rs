//! `Data_Entry_2017.csv` and `BBox_List_2017.csv` exactly as NIH ships them. Their headers were
//! written from a spreadsheet whose bracketed headers span several cells, so the header names
//! themselves contain the commas that separate the values: `OriginalImage[Width,Height]` is two
//! columns, `Bbox [x,y,w,h]` four; and the rows end in empty columns. A header is therefore read as
//! logical columns (a bracketed group is one column of several cells) and matched by name.
use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// The box list says `Infiltrate` where the data entry says `Infiltration`: one disease, named as in
/// the data entry.
pub fn canonical_finding(name: &str) -> &str {
    match name.trim() {
        "Infiltrate" => "Infiltration",
        other => other,
    }
}

/// The 8 diseases ChestX-ray8 has boxes for (canonical names).
pub const BOXED_DISEASES: [&str; 8] = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax"];

/// One row of `Data_Entry_2017.csv`. Only the image name and the findings are required; the
/// decoration columns are None when absent or empty.
#[derive(Debug, Clone, PartialEq)]
pub struct DataEntry {
    pub image: String,
    /// Canonical finding names; empty for `No Finding`.
    pub findings: Vec<String>,
    pub follow_up: Option<u32>,
    pub patient_id: Option<u32>,
    /// Years; NIH wrote "058Y" in early releases and 58 later.
    pub patient_age: Option<u32>,
    pub patient_sex: Option<String>,
    pub view_position: Option<String>,
    /// Of the original DICOM image, not of the shipped PNG.
    pub original_size: Option<[u32; 2]>,
    pub original_pixel_spacing: Option<[f64; 2]>,
}

/// One row of `BBox_List_2017.csv`: a box in the pixels of the image as shipped (1024 × 1024).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl BoundingBox {
    /// Checks that the box is one: finite coordinates and a positive, finite width and height. The
    /// one check of every box, read from NIH's list or handed in by a caller.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let BoundingBox { x, y, w, h } = *self;
        let finite = [x, y, w, h, x + w, y + h].iter().all(|v| v.is_finite());
        if finite && w > 0.0 && h > 0.0 {
            Ok(())
        } else {
            Err(format!("box (x {x}, y {y}, w {w}, h {h}) is not a box: its corners must be finite numbers and its sides positive"))
        }
    }

    /// The box in an image resized from `from` (width, height) to `to`.
    pub fn scaled(&self, from: [usize; 2], to: [usize; 2]) -> BoundingBox {
        let (sx, sy) = (to[0] as f64 / from[0] as f64, to[1] as f64 / from[1] as f64);
        BoundingBox { x: self.x * sx, y: self.y * sy, w: self.w * sx, h: self.h * sy }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BoxEntry {
    pub image: String,
    /// Canonical name (`Infiltrate` read as `Infiltration`).
    pub finding: String,
    pub bbox: BoundingBox,
}

pub fn read_data_entry(path: &Path) -> Result<Vec<DataEntry>> {
    let text = crate::io::read_text(path)?;
    parse_data_entry(&text, &path.display().to_string())
}

pub fn read_bbox_list(path: &Path) -> Result<Vec<BoxEntry>> {
    let text = crate::io::read_text(path)?;
    parse_bbox_list(&text, &path.display().to_string())
}

/// Splits `boxes` into those whose image the data entry lists with the boxed finding and the others
/// (a box NIH's labels do not confirm is a sign of mismatched tables, or of a subset of them).
pub fn boxes_confirmed_by(boxes: Vec<BoxEntry>, entries: &[DataEntry]) -> (Vec<BoxEntry>, Vec<BoxEntry>) {
    let findings: BTreeMap<&str, &[String]> = entries.iter().map(|e| (e.image.as_str(), e.findings.as_slice())).collect();
    boxes.into_iter().partition(|b| findings.get(b.image.as_str()).is_some_and(|f| f.contains(&b.finding)))
}

/// Parses the text of a `Data_Entry_2017.csv`; `source` names it in errors.
pub fn parse_data_entry(text: &str, source: &str) -> Result<Vec<DataEntry>> {
    let table = Table::parse(text, source)?;
    let image = table.column("Image Index")?;
    let findings = table.column("Finding Labels")?;
    let optional = |name: &str| table.column(name).ok();
    let (follow_up, patient_id, age, sex, view) =
        (optional("Follow-up #"), optional("Patient ID"), optional("Patient Age"), optional("Patient Gender"), optional("View Position"));
    let (size, spacing) = (optional("OriginalImage"), optional("OriginalImagePixelSpacing"));
    table
        .rows()
        .map(|row| {
            let findings = row.required(findings, "Finding Labels")?;
            Ok(DataEntry {
                image: row.required(image, "Image Index")?.to_string(),
                findings: findings.split('|').map(canonical_finding).filter(|f| *f != "No Finding" && !f.is_empty()).map(str::to_string).collect(),
                follow_up: row.number(follow_up, 0)?,
                patient_id: row.number(patient_id, 0)?,
                patient_age: row.age(age)?,
                patient_sex: row.text(sex, 0).map(str::to_string),
                view_position: row.text(view, 0).map(str::to_string),
                original_size: row.pair(size)?,
                original_pixel_spacing: row.pair(spacing)?,
            })
        })
        .collect()
}

/// Parses the text of a `BBox_List_2017.csv`; `source` names it in errors.
pub fn parse_bbox_list(text: &str, source: &str) -> Result<Vec<BoxEntry>> {
    let table = Table::parse(text, source)?;
    let image = table.column("Image Index")?;
    let finding = table.column("Finding Label")?;
    let bbox = table.column("Bbox")?;
    if bbox.cells != 4 {
        return Err(Error::InvalidData(format!("{source}: the Bbox column has {} cells, [x,y,w,h] expected", bbox.cells)));
    }
    table
        .rows()
        .map(|row| {
            let value = |i| row.number::<f64>(Some(bbox), i)?.ok_or_else(|| row.error("has an empty box coordinate"));
            let bbox = BoundingBox { x: value(0)?, y: value(1)?, w: value(2)?, h: value(3)? };
            bbox.validate().map_err(|problem| row.error(&format!("has a bad box: {problem}")))?;
            Ok(BoxEntry {
                image: row.required(image, "Image Index")?.to_string(),
                finding: canonical_finding(row.required(finding, "Finding Label")?).to_string(),
                bbox,
            })
        })
        .collect()
}

/// The boxes of each image and disease: image name → canonical finding → boxes.
pub fn boxes_by_image(entries: &[BoxEntry]) -> BTreeMap<String, BTreeMap<String, Vec<BoundingBox>>> {
    let mut map: BTreeMap<String, BTreeMap<String, Vec<BoundingBox>>> = BTreeMap::new();
    for entry in entries {
        map.entry(entry.image.clone()).or_default().entry(entry.finding.clone()).or_default().push(entry.bbox);
    }
    map
}

/// A logical column: its first cell and how many cells it spans.
#[derive(Debug, Clone, Copy)]
struct Column {
    first: usize,
    cells: usize,
}

struct Table<'a> {
    source: &'a str,
    columns: Vec<(String, Column)>,
    /// (line number, cells) of each non-empty data line.
    lines: Vec<(usize, Vec<String>)>,
}

impl<'a> Table<'a> {
    fn parse(text: &'a str, source: &'a str) -> Result<Self> {
        let split = |(n, line): (usize, &str)| {
            let cells = split_line(line)
                .ok_or_else(|| Error::InvalidData(format!("{source}:{}: an unbalanced quote (a quoted cell is not closed on its line)", n + 1)))?;
            Ok((n + 1, cells))
        };
        let mut lines = text.trim_start_matches('\u{feff}').lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(split);
        let (_, header) = lines.next().ok_or_else(|| Error::InvalidData(format!("{source}: the file is empty")))??;
        Ok(Table { source, columns: logical_columns(&header), lines: lines.collect::<Result<_>>()? })
    }

    /// The column whose name, before any bracket, is `name`.
    fn column(&self, name: &str) -> Result<Column> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| Error::InvalidData(format!("{}: no column {name:?} in the header", self.source)))
    }

    fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.lines.iter().map(move |(line, cells)| Row { source: self.source, line: *line, cells })
    }
}

/// Header cells → logical columns: `OriginalImage[Width`, `Height]` become `OriginalImage` spanning
/// two cells; empty trailing cells are no column.
fn logical_columns(header: &[String]) -> Vec<(String, Column)> {
    let mut columns = Vec::new();
    let mut i = 0;
    while i < header.len() {
        let cell = header[i].trim();
        let mut cells = 1;
        if cell.contains('[') && !cell.contains(']') {
            while i + cells < header.len() && !header[i + cells - 1].contains(']') {
                cells += 1;
            }
        }
        let name = cell.split('[').next().unwrap_or("").trim();
        if !name.is_empty() {
            columns.push((name.to_string(), Column { first: i, cells }));
        }
        i += cells;
    }
    columns
}

/// Splits a CSV line into cells; double quotes protect commas, `""` is a quote. None when a quote
/// is left open (NIH's tables hold no line breaks inside cells).
fn split_line(line: &str) -> Option<Vec<String>> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().expect("one cell").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(String::new()),
            c => cells.last_mut().expect("one cell").push(c),
        }
    }
    (!quoted).then_some(cells)
}

struct Row<'a> {
    source: &'a str,
    line: usize,
    cells: &'a [String],
}

impl Row<'_> {
    fn error(&self, problem: &str) -> Error {
        Error::InvalidData(format!("{}:{}: the row {problem}", self.source, self.line))
    }

    /// Cell `index` of `column` (None when the column is absent or the cell empty).
    fn text(&self, column: Option<Column>, index: usize) -> Option<&str> {
        self.cells.get(column?.first + index).map(|c| c.trim()).filter(|c| !c.is_empty())
    }

    /// A required text cell.
    fn required(&self, column: Column, what: &str) -> Result<&str> {
        self.text(Some(column), 0).ok_or_else(|| self.error(&format!("has no {what}")))
    }

    fn number<T: std::str::FromStr>(&self, column: Option<Column>, index: usize) -> Result<Option<T>> {
        match self.text(column, index) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| self.error(&format!("has {text:?} where a number belongs"))),
        }
    }

    /// "058Y" (early releases) or "58".
    fn age(&self, column: Option<Column>) -> Result<Option<u32>> {
        match self.text(column, 0) {
            None => Ok(None),
            Some(text) => text.trim_end_matches(['Y', 'y']).parse().map(Some).map_err(|_| self.error(&format!("has the age {text:?}"))),
        }
    }

    fn pair<T: std::str::FromStr + Copy>(&self, column: Option<Column>) -> Result<Option<[T; 2]>> {
        let Some(column) = column.filter(|c| c.cells == 2) else { return Ok(None) };
        Ok(match (self.number(Some(column), 0)?, self.number(Some(column), 1)?) {
            (Some(a), Some(b)) => Some([a, b]),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_headers_span_cells_and_trailing_columns_are_ignored() {
        let header = split_line("Image Index,Finding Label,Bbox [x,y,w,h],,,").unwrap();
        let columns = logical_columns(&header);
        let names: Vec<_> = columns.iter().map(|(n, c)| (n.as_str(), c.first, c.cells)).collect();
        assert_eq!(names, [("Image Index", 0, 1), ("Finding Label", 1, 1), ("Bbox", 2, 4)]);
    }

    #[test]
    fn quotes_protect_commas() {
        assert_eq!(split_line(r#"a,"b,c","d""e",,"#).unwrap(), ["a", "b,c", "d\"e", "", ""]);
        assert_eq!(split_line(r#"a,"b,c"#), None);
    }
}
