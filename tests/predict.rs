//! `pretext predict` and `pretext eval` through the binary on classifiers fine-tuned on the
//! committed samples: a run's best classifier labels the test split as its fine-tuning
//! evaluated it (same accuracy), with the data's class names; JSON lines and CSV; `eval`'s
//! figures and confusion matrix; every modality; Hugging Face classifiers; and the errors
//! a user meets.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn pretext(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = pretext(args);
    assert!(
        o.status.success(),
        "pretext {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str], names: &[&str]) {
    let o = pretext(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "pretext {args:?}: {err}");
    for n in names {
        assert!(err.contains(n), "pretext {args:?}: no `{n}` in: {err}");
    }
}

/// `pretext run RECIPE --out RUN --set …`.
fn run(recipe: &str, out: &Path, sets: &[&str]) {
    ok(&common::run_args(recipe, out.to_str().unwrap(), sets));
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The test accuracy the run's one fine-tuning recorded.
fn recorded_accuracy(run: &Path) -> f64 {
    let mut found = Vec::new();
    for e in std::fs::read_dir(run.join("downstream")).unwrap() {
        let dir = e.unwrap().path();
        if dir.join("model.json").is_file() {
            let r: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap())
                    .unwrap();
            found.push(r["result"]["test_accuracy"].as_f64().unwrap());
        }
    }
    assert_eq!(found.len(), 1, "one fine-tuned classifier");
    found[0]
}

/// `pretext eval --model RUN --data DATA --out JSON --confusion PNG`: its JSON, checked to
/// add up (the confusion matrix counts every example once; its diagonal is the accuracy;
/// each class's support is its row).
fn eval(run: &Path, data: &str, json: &Path, png: &Path) -> Value {
    let printed = ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        data,
        "--out",
        json.to_str().unwrap(),
        "--confusion",
        png.to_str().unwrap(),
    ]);
    let e: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let confusion: Vec<Vec<u64>> = serde_json::from_value(e["confusion"].clone()).unwrap();
    let total: u64 = confusion.iter().flatten().sum();
    let right: u64 = (0..confusion.len()).map(|i| confusion[i][i]).sum();
    assert_eq!(total, e["examples"].as_u64().unwrap());
    assert!((right as f64 / total as f64 - e["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    for (c, row) in e["classes"].as_array().unwrap().iter().zip(&confusion) {
        assert_eq!(
            c["support"].as_u64().unwrap(),
            row.iter().sum::<u64>(),
            "{c}"
        );
        assert!(printed.contains(c["class"].as_str().unwrap()), "{printed}");
    }
    assert!(printed.contains("accuracy"), "{printed}");
    e
}

/// Each line is well formed: the label is the best of `top_k`, which is sorted and holds
/// `k` of `classes`.
fn check_lines(lines: &[Value], classes: &[&str], k: usize) {
    for l in lines {
        let top = l["top_k"].as_array().unwrap();
        assert_eq!(top.len(), k, "{l}");
        assert_eq!(l["label"], top[0]["label"], "{l}");
        assert_eq!(l["score"], top[0]["score"], "{l}");
        let scores: Vec<f64> = top.iter().map(|t| t["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{l}");
        assert!(scores.iter().all(|s| *s > 0.0 && *s <= 1.0), "{l}");
        for t in top {
            assert!(classes.contains(&t["label"].as_str().unwrap()), "{l}");
        }
    }
}

fn files_under(root: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Predictions right, counted by the class directory each file is in.
fn folder_accuracy(lines: &[Value]) -> f64 {
    let right = lines
        .iter()
        .filter(|l| {
            let input = Path::new(l["input"].as_str().unwrap());
            let class = input.parent().unwrap().file_name().unwrap();
            l["label"].as_str().unwrap() == class.to_str().unwrap()
        })
        .count();
    right as f64 / lines.len() as f64
}

const FINE_TUNE: &str = "downstream=[{ head = \"fine-tune\", pooling = \"cls\", \
     label_fractions = [1.0], epochs = 3, batch_size = 16 }]";

#[test]
fn an_image_runs_classifier_labels_the_test_split_as_its_fine_tuning_scored_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run(
        "recipes/mae-image-folder.toml",
        &out,
        &[
            "device=\"cpu\"",
            "model.dim=32",
            "model.depth=1",
            "model.heads=2",
            "model.mlp_dim=64",
            "objective.decoder.dim=16",
            "objective.decoder.depth=1",
            "objective.decoder.heads=2",
            "train.steps=4",
            "train.batch_size=16",
            "train.checkpoint_every=4",
            "train.schedule.warmup_steps=1",
            FINE_TUNE,
        ],
    );
    let files = files_under("data/image-folder-sample/test");
    let mut args = vec!["predict", "--model", out.to_str().unwrap(), "--top-k", "2"];
    args.push("--image");
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    args.extend(&names);
    let got = lines(&ok(&args));
    assert_eq!(got.len(), files.len());
    let classes = ["bag", "sneaker", "t-shirt", "trouser"];
    check_lines(&got, &classes, 2);
    // The same images, the same preprocessing, the same model: the same accuracy (within
    // one image, for a near-tie that batching could round the other way).
    let recorded = recorded_accuracy(&out);
    let measured = folder_accuracy(&got);
    assert!(
        (measured - recorded).abs() <= 1.0 / files.len() as f64 + 1e-9,
        "predict: {measured}, fine-tuning recorded {recorded}"
    );

    // CSV: a header, one row per image, the same labels.
    let csv = tmp.path().join("p.csv");
    args.extend(["--out", csv.to_str().unwrap()]);
    assert_eq!(ok(&args), "", "nothing on stdout with --out");
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "input,label,score,label_2,score_2");
    assert_eq!(rows.len(), files.len() + 1);
    for (row, l) in rows[1..].iter().zip(&got) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[1], l["label"].as_str().unwrap());
    }

    // `eval` on the same folder: the same accuracy, figures that add up, and a picture.
    let (json, png) = (
        tmp.path().join("eval.json"),
        tmp.path().join("confusion.png"),
    );
    let e = eval(&out, "data/image-folder-sample/test", &json, &png);
    assert!(
        (e["accuracy"].as_f64().unwrap() - measured).abs() < 1e-12,
        "{e}"
    );
    // A picture with a cell per (true, predicted) pair: white where the row has none,
    // shaded where it has some.
    let picture = image::open(&png).unwrap().to_rgb8();
    assert!(picture.width() >= 360 && picture.height() > 100);
    let shaded = picture
        .pixels()
        .filter(|p| p[0] < 128 && p[2] > p[0])
        .count();
    assert!(shaded > 100, "no cell is shaded: {shaded} dark blue pixels");

    // Inputs of another modality, and an output format predict does not write.
    let r = out.to_str().unwrap();
    fails(
        &["predict", "--model", r, "--text", "a bag"],
        &["image classifier", "--image"],
    );
    fails(
        &[
            "predict", "--model", r, "--image", names[0], "--out", "p.txt",
        ],
        &["p.txt", ".jsonl or .csv"],
    );
}

#[test]
fn idx_classifiers_are_named_by_data_classes_and_export_them_as_id2label() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = common::write_recipe(tmp.path(), &common::tiny_recipe(4, 4));
    let out = tmp.path().join("run");
    let fashion = "[\"T-shirt/top\", \"Trouser\", \"Pullover\", \"Dress\", \"Coat\", \"Sandal\", \
                   \"Shirt\", \"Sneaker\", \"Bag\", \"Ankle boot\"]";
    let classes_set = format!("data.classes={fashion}");
    run(recipe.to_str().unwrap(), &out, &[&classes_set, FINE_TUNE]);
    let image = "data/image-folder-sample/test/bag/00018.png";
    let got = lines(&ok(&[
        "predict",
        "--model",
        out.to_str().unwrap(),
        "--image",
        image,
        "--top-k",
        "10",
    ]));
    let names: Vec<String> = serde_json::from_str(fashion).unwrap();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    check_lines(&got, &names, 10);
    let total: f64 = got[0]["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["score"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-4, "all ten classes sum to {total}");

    // Exported, the names become the config's id2label.
    let cls = std::fs::read_dir(out.join("downstream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("model.json").is_file())
        .unwrap();
    let hf = tmp.path().join("hf");
    ok(&[
        "export",
        cls.to_str().unwrap(),
        "--format",
        "hf",
        "--out",
        hf.to_str().unwrap(),
    ]);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["id2label"]["8"], "Bag");
    assert_eq!(config["label2id"]["Ankle boot"], 9);
    // ... and the exported classifier predicts the same, by the same names.
    let again = lines(&ok(&[
        "predict",
        "--model",
        hf.to_str().unwrap(),
        "--image",
        image,
        "--top-k",
        "10",
    ]));
    assert_eq!(again[0]["label"], got[0]["label"]);

    // Data whose labels are not the classifier's classes is refused, naming the label.
    fails(
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--data",
            "data/image-folder-sample/test",
        ],
        &["label `bag`", "Ankle boot"],
    );

    // `eval` of the run alone reads its recipe's IDX test split (labels named by
    // data.classes) and gives the accuracy the fine-tuning recorded; the recipe file gives
    // the same, and `--split train` the training split.
    let (json, png) = (tmp.path().join("e.json"), tmp.path().join("e.png"));
    let r = out.to_str().unwrap();
    let ev = |extra: &[&str]| -> Value {
        let mut args = vec!["eval", "--model", r, "--out", json.to_str().unwrap()];
        args.extend(extra);
        ok(&args);
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let own = ev(&[]);
    assert!(
        (own["accuracy"].as_f64().unwrap() - recorded_accuracy(&out)).abs() < 1e-12,
        "{own}"
    );
    assert_eq!(own["examples"], 40, "the recipe's limit applies");
    assert_eq!(own["classes"][8]["class"], "Bag");
    let resolved = out.join("recipe.toml");
    let via_recipe = ev(&["--data", resolved.to_str().unwrap()]);
    assert_eq!(via_recipe["confusion"], own["confusion"]);
    let train = ev(&["--split", "train", "--confusion", png.to_str().unwrap()]);
    assert_eq!(train["examples"], 64);
    assert!(png.is_file());
    // A recipe without a test split says so, naming the key.
    let no_test = tmp.path().join("no-test.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("test ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let pretraining_only = text.split("[[downstream]]").next().unwrap();
    std::fs::write(&no_test, pretraining_only).unwrap();
    fails(
        &["eval", "--model", r, "--data", no_test.to_str().unwrap()],
        &["data.test"],
    );

    // Names that cannot be the labels' are refused before training.
    fails(
        &[
            "recipe",
            "check",
            recipe.to_str().unwrap(),
            "--set",
            "data.classes=[\"a\", \"a\"]",
        ],
        &["data.classes[1]", "data.classes[0]"],
    );
}

#[test]
fn a_text_runs_classifier_labels_sentences_as_its_fine_tuning_scored_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run(
        "recipes/mlm-shakespeare-sample.toml",
        &out,
        &[&common::TINY_TEXT[..], &[FINE_TUNE]].concat(),
    );
    let test: Vec<Value> =
        lines(&std::fs::read_to_string("data/fortunes-sample/test.jsonl").unwrap());
    let texts: Vec<&str> = test.iter().map(|l| l["text"].as_str().unwrap()).collect();
    let mut args = vec!["predict", "--model", out.to_str().unwrap(), "--top-k", "3"];
    for t in &texts {
        args.extend(["--text", t]);
    }
    let got = lines(&ok(&args));
    assert_eq!(got.len(), texts.len());
    let classes = [
        "computers",
        "men-women",
        "politics",
        "science",
        "songs-poems",
        "work",
    ];
    check_lines(&got, &classes, 3);
    let right = got
        .iter()
        .zip(&test)
        .filter(|(g, t)| g["label"] == t["label"])
        .count();
    let measured = right as f64 / texts.len() as f64;
    let recorded = recorded_accuracy(&out);
    assert!(
        (measured - recorded).abs() <= 1.0 / texts.len() as f64 + 1e-9,
        "predict: {measured}, fine-tuning recorded {recorded}"
    );
    let (json, png) = (
        tmp.path().join("eval.json"),
        tmp.path().join("confusion.png"),
    );
    let e = eval(&out, "data/fortunes-sample/test.jsonl", &json, &png);
    assert!(
        (e["accuracy"].as_f64().unwrap() - measured).abs() < 1e-12,
        "{e}"
    );
    assert_eq!(e["classes"].as_array().unwrap().len(), classes.len());
}

#[test]
fn an_audio_runs_classifier_labels_clips_window_by_window() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run(
        "recipes/audio-mae-words-sample.toml",
        &out,
        &[
            &common::TINY_AUDIO[..],
            &["downstream=[{ head = \"fine-tune\", pooling = \"mean\", \
               label_fractions = [1.0], epochs = 1, batch_size = 16 }]"],
        ]
        .concat(),
    );
    let files = files_under("data/words-sample/test");
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let mut args = vec!["predict", "--model", out.to_str().unwrap(), "--top-k", "20"];
    args.push("--audio");
    args.extend(&names);
    let got = lines(&ok(&args));
    assert_eq!(got.len(), files.len());
    let classes: Vec<String> = std::fs::read_dir("data/words-sample/train")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let classes: Vec<&str> = classes.iter().map(String::as_str).collect();
    check_lines(&got, &classes, 20);
    for l in &got {
        let total: f64 = l["top_k"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["score"].as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{l}");
        // Every test clip fits the model's 0.95 s window: padded, as fine-tuning padded it.
        assert!(l["seconds"].as_f64().unwrap() < 0.95, "{l}");
        assert_eq!(l["windows"], 1, "{l}");
    }
    let recorded = recorded_accuracy(&out);
    let measured = folder_accuracy(&got);
    assert!(
        (measured - recorded).abs() <= 1.0 / files.len() as f64 + 1e-9,
        "predict: {measured}, fine-tuning recorded {recorded}"
    );
    let (json, png) = (
        tmp.path().join("eval.json"),
        tmp.path().join("confusion.png"),
    );
    let e = eval(&out, "data/words-sample/test", &json, &png);
    assert!(
        (e["accuracy"].as_f64().unwrap() - measured).abs() < 1e-12,
        "{e}"
    );
    // A longer recording is cut into full-length windows whose probabilities are averaged.
    let long = "tests/fixtures/audio/clip_sphinx_16k.wav";
    let l = &lines(&ok(&[
        "predict",
        "--model",
        out.to_str().unwrap(),
        "--audio",
        long,
    ]))[0];
    let seconds = l["seconds"].as_f64().unwrap();
    assert!(seconds > 1.0, "{l}");
    assert_eq!(l["windows"], (seconds / 0.95).ceil() as u64, "{l}");
    fails(
        &[
            "predict",
            "--model",
            out.to_str().unwrap(),
            "--image",
            "x.png",
        ],
        &["audio classifier", "--audio"],
    );
}

#[test]
fn hugging_face_classifiers_predict_with_their_id2label_and_encoders_are_refused() {
    let image = "data/image-folder-sample/test/bag/00018.png";
    let got = lines(&ok(&[
        "predict",
        "--model",
        "tests/fixtures/hf/vit_classifier",
        "--image",
        image,
    ]));
    check_lines(
        &got,
        &["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3", "LABEL_4"],
        5,
    );
    fails(
        &[
            "predict",
            "--model",
            "tests/fixtures/hf/vit_model",
            "--image",
            image,
        ],
        &["not a classifier", "ViTModel"],
    );
    // A run without a fine-tuned head says how to get one.
    let tmp = tempfile::tempdir().unwrap();
    let recipe = common::write_recipe(tmp.path(), &common::tiny_recipe(2, 2));
    let out = tmp.path().join("run");
    run(recipe.to_str().unwrap(), &out, &["downstream=[]"]);
    fails(
        &[
            "predict",
            "--model",
            out.to_str().unwrap(),
            "--image",
            image,
        ],
        &["no fine-tuned classifier", "fine-tune"],
    );
}

#[test]
fn hugging_face_text_classifiers_predict_with_their_tokenizer_and_id2label() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bert_cls");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(Path::new("tests/fixtures/hf/bert_cls").join(f), dir.join(f)).unwrap();
    }
    // The classifier's 30-token vocabulary: the BERT fixture's tokenizer, cut to it.
    let read =
        |p: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let mut tok = read("tests/fixtures/hf/bert_model/tokenizer.json");
    tok["model"]["vocab"]
        .as_object_mut()
        .unwrap()
        .retain(|_, id| id.as_u64().unwrap() < 30);
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let mut config = read("tests/fixtures/hf/bert_cls/config.json");
    config["id2label"] = serde_json::json!({"0": "sad", "1": "calm", "2": "glad"});
    config["label2id"] = serde_json::json!({"sad": 0, "calm": 1, "glad": 2});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let d = dir.to_str().unwrap();
    let sentence = "the cat sat on the mat";
    let got = lines(&ok(&[
        "predict",
        "--model",
        d,
        "--text",
        sentence,
        "--text",
        "a dog ran in the park",
        "--top-k",
        "3",
    ]));
    check_lines(&got, &["sad", "calm", "glad"], 3);

    // The probabilities are the softmax of what `forward` gives for the same ids:
    // [CLS] the cat sat on the mat [SEP].
    let ids = candle_core::Tensor::new(&[[2u32, 5, 6, 7, 8, 5, 9, 3]], &candle_core::Device::Cpu)
        .unwrap();
    let (inputs, outputs) = (
        tmp.path().join("in.safetensors"),
        tmp.path().join("out.safetensors"),
    );
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("input_ids", ids)]),
        &inputs,
    )
    .unwrap();
    ok(&[
        "forward",
        "--model",
        d,
        "--inputs",
        inputs.to_str().unwrap(),
        "--out",
        outputs.to_str().unwrap(),
    ]);
    let logits = candle_core::safetensors::load(&outputs, &candle_core::Device::Cpu).unwrap()
        ["logits"]
        .to_vec2::<f32>()
        .unwrap()[0]
        .clone();
    let max = logits.iter().cloned().fold(f32::MIN, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    for t in got[0]["top_k"].as_array().unwrap() {
        let i = ["sad", "calm", "glad"]
            .iter()
            .position(|n| *n == t["label"])
            .unwrap();
        let p = (logits[i] - max).exp() / sum;
        assert!(
            (t["score"].as_f64().unwrap() - p as f64).abs() < 1e-5,
            "{t} vs {p}"
        );
    }
}

#[test]
fn a_waveform_classifier_labels_clips_as_its_fine_tuning_scored_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run(
        "recipes/wav2vec2-words-sample.toml",
        &out,
        &[
            "device=\"cpu\"",
            "downstream=[{ head = \"fine-tune\", pooling = \"mean\", label_fractions = [1.0], \
             epochs = 1, batch_size = 16 }]",
        ],
    );
    let files = files_under("data/words-sample/test");
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let mut args = vec!["predict", "--model", out.to_str().unwrap(), "--top-k", "1"];
    args.push("--audio");
    args.extend(&names);
    let got = lines(&ok(&args));
    assert_eq!(got.len(), files.len());
    let measured = folder_accuracy(&got);
    let recorded = recorded_accuracy(&out);
    assert!(
        (measured - recorded).abs() <= 1.0 / files.len() as f64 + 1e-9,
        "predict: {measured}, fine-tuning recorded {recorded}"
    );
}
