//! data2vec on all three modalities, on the committed samples: one objective whose teacher
//! lives in the checkpoints (and out of the optimizer), follows the student by its EMA
//! schedule, and resumes bitwise; and recipe errors that name the key.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};
use pretext::train::checkpoint;

/// `recipe` (TOML text) with its `[objective]` replaced by `objective` and `sets` applied.
fn with_objective(recipe: &str, objective: &str, file: &Path, sets: &[&str]) -> recipe::Loaded {
    let mut table: toml::Table = recipe.parse().unwrap();
    table.insert(
        "objective".into(),
        toml::Value::Table(objective.parse().unwrap()),
    );
    std::fs::write(file, toml::to_string(&table).unwrap()).unwrap();
    let sets: Vec<Override> = sets
        .iter()
        .map(|s| Override::parse_set(s).unwrap())
        .collect();
    recipe::load(file, &sets).unwrap()
}

fn run(loaded: &recipe::Loaded, out: PathBuf, stop_after: Option<usize>) -> run::Summary {
    run::start(
        loaded,
        &RunOptions {
            out: Some(out),
            stop_after,
            skip_downstream: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The latest checkpoint's model tensors, as f32 values.
fn model(run_dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let path = checkpoint::latest(&run_dir.join("checkpoints"))
        .unwrap()
        .unwrap();
    let c = checkpoint::load(&path, &candle_core::Device::Cpu).unwrap();
    assert!(
        c.optim.keys().all(|k| !k.contains("teacher.")),
        "the optimizer holds state for the teacher: {:?}",
        c.optim
            .keys()
            .filter(|k| k.contains("teacher."))
            .collect::<Vec<_>>()
    );
    c.model
        .iter()
        .map(|(k, t)| (k.clone(), t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

/// Each teacher tensor beside its student's: `(name, teacher, student)`.
fn pairs(m: &BTreeMap<String, Vec<f32>>, prefix: &str) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let out: Vec<_> = m
        .iter()
        .filter_map(|(k, t)| {
            let student = k.strip_prefix("teacher.")?;
            Some((k.clone(), t.clone(), m[student].clone()))
        })
        .collect();
    let students = m.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(out.len(), students, "one teacher tensor per student tensor");
    out
}

/// A stopped and resumed run ends bitwise equal to an uninterrupted one, teacher included,
/// and the teacher has moved from the student's start without becoming the student.
fn resumes_bitwise(loaded: &recipe::Loaded, tmp: &Path, prefix: &str) {
    let straight = tmp.join("straight");
    let s = run(loaded, straight.clone(), None);
    assert_eq!(s.steps, 6);
    assert!(s.final_loss.is_finite());
    assert!(s.held_out_mlm.is_none(), "data2vec has no MLM head");
    let resumed = tmp.join("resumed");
    assert_eq!(run(loaded, resumed.clone(), Some(4)).steps, 4);
    let r = run::resume(
        &resumed,
        &[],
        &RunOptions {
            skip_downstream: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.steps, 6);
    common::assert_same_final_weights(&straight, &resumed);
    let m = model(&straight);
    let p = pairs(&m, prefix);
    assert!(
        p.iter().any(|(_, t, s)| t != s),
        "the teacher equals the student after training with decay < 1"
    );
}

const IMAGE_D2V: &str = r#"
kind = "data2vec"
mask_ratio = 0.75
ema = { start = 0.9, end = 0.99 }
decoder = { dim = 16, depth = 1, heads = 2 }
"#;

#[test]
fn image_data2vec_resumes_bitwise_with_its_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let loaded = with_objective(
        &common::tiny_recipe(6, 2),
        IMAGE_D2V,
        &tmp.path().join("r.toml"),
        &[],
    );
    resumes_bitwise(&loaded, tmp.path(), "vit.");
}

/// With decay 0 the teacher is the student after every step; with decay 1 it stays the
/// student's seeded starting point.
#[test]
fn the_teacher_follows_its_ema_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = common::tiny_recipe(3, 3);
    let objective = |d: f64| {
        IMAGE_D2V.replace(
            "start = 0.9, end = 0.99",
            &format!("start = {d:?}, end = {d:?}"),
        )
    };
    let file = tmp.path().join("r.toml");
    let follow = with_objective(&recipe, &objective(0.0), &file, &[]);
    run(&follow, tmp.path().join("follow"), None);
    for (name, t, s) in pairs(&model(&tmp.path().join("follow")), "vit.") {
        assert!(t == s, "decay 0: `{name}` is not the student's");
    }
    let fixed = with_objective(&recipe, &objective(1.0), &file, &[]);
    run(&fixed, tmp.path().join("fixed"), None);
    // The student's start: parameters are seeded by (seed, name), whatever builds them.
    let r = &fixed.recipe;
    let params = pretext::params::ParamStore::new(r.seed);
    pretext::modality::image::ImageEncoder::new(
        pretext::modality::image::ImageGeometry {
            size: 28,
            channels: 1,
            patch: 7,
        },
        &r.model.encoder_config(),
        params.var_builder(&candle_core::Device::Cpu).pp("vit"),
    )
    .unwrap();
    let start: BTreeMap<String, Vec<f32>> = params
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    let mut moved = 0;
    for (name, t, s) in pairs(&model(&tmp.path().join("fixed")), "vit.") {
        let student = name.strip_prefix("teacher.").unwrap();
        assert!(
            t == start[student],
            "decay 1: `{name}` left the student's start"
        );
        moved += usize::from(t != s);
    }
    assert!(moved > 0, "the student did not train");
}

#[test]
fn text_data2vec_resumes_bitwise_with_its_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = std::fs::read_to_string("recipes/mlm-shakespeare-sample.toml").unwrap();
    let mut sets: Vec<&str> = common::TINY_TEXT.to_vec();
    sets.extend([
        "train.steps=6",
        "train.batch_size=8",
        "model.dropout=0.1",
        "train.log_every=1",
    ]);
    let loaded = with_objective(
        &recipe,
        "kind = \"data2vec\"\nwhole_word = true\nema = { start = 0.9, end = 0.99 }\ndecoder = { dim = 16, depth = 1, heads = 2 }",
        &tmp.path().join("r.toml"),
        &sets,
    );
    resumes_bitwise(&loaded, tmp.path(), "text.");
}

#[test]
fn audio_data2vec_resumes_bitwise_with_its_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = std::fs::read_to_string("recipes/audio-mae-words-sample.toml").unwrap();
    let mut sets: Vec<&str> = common::TINY_AUDIO.to_vec();
    sets.extend(["train.steps=6", "model.dropout=0.1", "train.log_every=1"]);
    let loaded = with_objective(
        &recipe,
        "kind = \"data2vec\"\nmasking = \"time\"\nema = { start = 0.9, end = 0.99 }\ndecoder = { dim = 16, depth = 1, heads = 2 }",
        &tmp.path().join("r.toml"),
        &sets,
    );
    resumes_bitwise(&loaded, tmp.path(), "audio.");
}

#[test]
fn data2vec_recipe_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = common::tiny_recipe(3, 3);
    let cases = [
        ("top_k = 2", "objective.top_k"),
        ("whole_word = true", "objective.whole_word"),
        ("ema = { start = 1.5 }", "objective.ema.start"),
        ("norm_pix_loss = true", "objective.norm_pix_loss"),
    ];
    for (extra, key) in cases {
        let ema = if extra.starts_with("ema") {
            ""
        } else {
            "ema = { start = 0.9, end = 0.99 }\n"
        };
        let objective =
            format!("{IMAGE_D2V}\n{extra}").replace("ema = { start = 0.9, end = 0.99 }\n", ema);
        let mut table: toml::Table = recipe.parse().unwrap();
        table.insert(
            "objective".into(),
            toml::Value::Table(objective.parse().unwrap()),
        );
        let file = tmp.path().join("bad.toml");
        std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
        let err = recipe::load(&file, &[]).err().unwrap().to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
}
