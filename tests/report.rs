//! Pictures a run draws (`pictures/loss.png` at each checkpoint, `pictures/label-efficiency.png`
//! with its table) and `pretext report`, which compares runs: through the binary on the
//! committed Fashion-MNIST sample.

mod common;

use std::path::Path;
use std::process::Command;

fn pretext(args: &[&str]) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "pretext {args:?}: {err}");
    (out, err)
}

/// Width, height, and how many pixels are not white or grey (the lines drawn).
fn picture(path: &Path) -> (u32, u32, usize) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let coloured = img
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0;
            r.max(g).max(b) - r.min(g).min(b) > 60
        })
        .count();
    (img.width(), img.height(), coloured)
}

#[test]
fn runs_draw_their_loss_and_label_efficiency_and_report_compares_them() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = common::write_recipe(tmp.path(), &common::tiny_recipe(6, 3));
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    pretext(&[
        "run",
        recipe.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ]);
    pretext(&[
        "run",
        recipe.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
        "--set",
        "objective.mask_ratio=0.5",
    ]);
    for run in [&a, &b] {
        // Loss and learning rate: two charts, each with a line.
        let (w, h, drawn) = picture(&run.join("pictures/loss.png"));
        assert_eq!((w, h), (800, 600));
        assert!(drawn > 200, "{drawn} coloured pixels");
        let (w, h, drawn) = picture(&run.join("pictures/label-efficiency.png"));
        assert_eq!((w, h), (800, 300));
        assert!(drawn > 100, "{drawn} coloured pixels");
    }

    let png = tmp.path().join("report.png");
    let (table, _) = pretext(&[
        "report",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "| method | labels | a | b |", "{table}");
    // The tiny recipe's probe at 50 % and 100 % of the labels: a row each, a number per run.
    let rows: Vec<&str> = lines[2..].to_vec();
    assert_eq!(rows.len(), 2, "{table}");
    for (row, labels) in rows.iter().zip(["50 %", "100 %"]) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[1], "linear probe (pretrained)", "{row}");
        assert_eq!(cells[2], labels, "{row}");
        for c in &cells[3..5] {
            let v: f64 = c.parse().unwrap_or_else(|_| panic!("{row}"));
            assert!((0.0..=100.0).contains(&v), "{row}");
        }
    }
    // The two runs' losses, overlaid: two colours.
    let img = image::open(&png).unwrap().to_rgb8();
    let colour = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
    assert!(colour([31, 119, 180]) > 100 && colour([255, 127, 14]) > 100);

    let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["report", "data/fashion-mnist-sample", "--out"])
        .arg(tmp.path().join("none.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not a run directory"), "{err}");
}
