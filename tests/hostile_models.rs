//! Hostile input to the model verbs (`forward`, `embed`, `inspect`) and data listings,
//! through the real binary under the same budget as `tests/hostile.rs`: class labels out of
//! range, audio too short for the model, malformed `preprocessor_config.json`, a FIFO as a
//! model's `config.json`, JSONL and manifest listings that lie, a run directory with a
//! truncated checkpoint or a broken recipe. Each must fail with exit
//! code 1 and an error naming the file and what is wrong, never panic or block.

mod common;
mod hostile_support;

use hostile_support::{fixture_copy, mkfifo, pretext, refused, scratch};

#[test]
fn classifier_labels_out_of_range_are_errors_naming_the_input() {
    let dir = scratch("labels");
    for (model, bad) in [
        ("vit_classifier", [7i64, 0]),
        ("vit_classifier", [0, -1]),
        ("bert_cls", [0, 3]),
    ] {
        let fixture = format!("tests/fixtures/hf/{model}");
        let io = pretext::tensor_io::read(
            std::path::Path::new(&format!("{fixture}/io.safetensors")),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let inputs: Vec<(String, candle_core::Tensor)> = io
            .tensors
            .into_iter()
            .filter(|(k, _)| k.contains("pixel") || k.contains("_ids") || k.contains("mask"))
            .chain(std::iter::once({
                let n = if model == "bert_cls" { 3 } else { 2 };
                let mut l = bad.to_vec();
                l.resize(n, 0);
                (
                    "labels".to_string(),
                    candle_core::Tensor::new(l, &candle_core::Device::Cpu).unwrap(),
                )
            }))
            .collect();
        let file = dir.join(format!(
            "{model}-{}.safetensors",
            bad.iter().find(|&&x| x != 0).unwrap()
        ));
        pretext::tensor_io::write_pt(&file, &inputs).unwrap();
        let bad_label = bad.iter().find(|&&x| x != 0).unwrap().to_string();
        refused(
            &[
                "forward",
                "--model",
                &fixture,
                "--inputs",
                file.to_str().unwrap(),
                "--out",
                dir.join("out.safetensors").to_str().unwrap(),
            ],
            &["`labels`", &format!("label {bad_label} is out of range")],
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn audio_too_short_for_the_model_is_an_error_naming_the_file() {
    use pretext::modality::audio::wav::{write_wav_i16, Waveform};
    let dir = scratch("short-audio");
    let wav = |name: &str, n: usize| {
        let path = dir.join(name);
        let samples = (0..n).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        write_wav_i16(
            &path,
            &Waveform {
                samples,
                sample_rate: 16_000,
            },
        )
        .unwrap();
        path
    };
    let short = wav("short.wav", 10);
    let model = "tests/fixtures/hf/w2v2_group";
    refused(
        &[
            "embed",
            "--model",
            model,
            "--audio",
            short.to_str().unwrap(),
        ],
        &[short.to_str().unwrap(), "too few"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_preprocessor_configs_name_the_file_and_key() {
    let dir = scratch("preprocessor");
    let image = "data/image-folder-sample/train/bag/00023.png";
    let clip = "tests/fixtures/audio/clip_sphinx_16k.wav";
    for (i, (model, text, flag, input, expected)) in [
        (
            "vit_model",
            r#"{"image_mean": "grey"}"#,
            "--image",
            image,
            "image_mean",
        ),
        ("vit_model", "{not json", "--image", image, "invalid JSON"),
        (
            "w2v2_group",
            r#"{"do_normalize": "yes"}"#,
            "--audio",
            clip,
            "do_normalize",
        ),
        ("w2v2_group", "{not json", "--audio", clip, "invalid JSON"),
    ]
    .into_iter()
    .enumerate()
    {
        let case = dir.join(i.to_string());
        let m = fixture_copy(model, &case);
        std::fs::write(m.join("preprocessor_config.json"), text).unwrap();
        refused(
            &["embed", "--model", m.to_str().unwrap(), flag, input],
            &["preprocessor_config.json", expected],
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fifo_as_a_model_config_is_refused_without_blocking() {
    let dir = scratch("fifo-config");
    let m = fixture_copy("bert_model", &dir);
    std::fs::remove_file(m.join("config.json")).unwrap();
    if !mkfifo(&m.join("config.json")) {
        return; // no mkfifo here; special_files_are_refused_without_blocking says so
    }
    for verb in [&["inspect"][..], &["embed", "--text", "hello"][..]] {
        let mut args = vec![verb[0]];
        if verb[0] == "inspect" {
            args.push(m.to_str().unwrap());
        } else {
            args.extend(["--model", m.to_str().unwrap()]);
            args.extend(&verb[1..]);
        }
        // `inspect` lists the weights and leaves the family out; `embed` needs the config.
        let o = pretext(&args);
        if verb[0] == "inspect" {
            assert_eq!(o.code, Some(0), "pretext {args:?}: {}", o.stderr);
        } else {
            assert_eq!(o.code, Some(1), "pretext {args:?}: {}", o.stderr);
            assert!(
                o.stderr.contains("config.json"),
                "pretext {args:?}: {}",
                o.stderr
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_data_listings_name_the_file() {
    let dir = scratch("listings");
    let jsonl = dir.join("train.jsonl");
    std::fs::write(&jsonl, "{\"text\": \"a line\"}\n{\"text\": unquoted}\n").unwrap();
    let set = format!(
        "data.train={{format=\"jsonl\", path=\"{}\"}}",
        jsonl.display()
    );
    refused(
        &[
            "recipe",
            "check",
            "recipes/mlm-shakespeare-sample.toml",
            "--set",
            &set,
        ],
        &["train.jsonl", "line 2"],
    );
    let csv = dir.join("manifest.csv");
    std::fs::write(&csv, "path,label,split\nmissing/clip.wav,zero,train\n").unwrap();
    let set = format!(
        "data.train={{format=\"manifest\", path=\"{}\", split=\"train\"}}",
        csv.display()
    );
    refused(
        &[
            "recipe",
            "check",
            "recipes/audio-mae-words-sample.toml",
            "--set",
            &set,
        ],
        &["manifest.csv", "missing/clip.wav", "data.train"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_run_directory_is_an_error_naming_the_file_in_every_verb() {
    let dir = scratch("damaged-run");
    let recipe = common::write_recipe(&dir, &common::tiny_recipe(4, 2));
    let run = dir.join("run");
    let o = pretext(&[
        "run",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let image = "data/image-folder-sample/train/bag/00023.png";
    let (r, out) = (run.to_str().unwrap(), dir.join("export"));
    let verbs: [&[&str]; 3] = [
        &["embed", "--model", r, "--image", image],
        &[
            "export",
            r,
            "--format",
            "hf",
            "--out",
            out.to_str().unwrap(),
        ],
        &["inspect", r],
    ];

    // The newest checkpoint cut short: named, not silently replaced by an older one.
    let newest = run.join("checkpoints/step-0000004.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 3]).unwrap();
    for args in verbs {
        refused(args, &["step-0000004.safetensors", "truncated"]);
    }
    std::fs::write(&newest, &bytes).unwrap();

    // The run's recipe no longer parses: every verb that reads it says where.
    let file = run.join("recipe.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\ngarbage = [\n")).unwrap();
    for args in [verbs[0], verbs[1], &["run", r][..]] {
        refused(args, &["recipe.toml", "invalid TOML"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_text_run_with_a_damaged_tokenizer_or_config_is_refused_not_exported() {
    let dir = scratch("damaged-tokenizer");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let sets = [&common::TINY_TEXT[..], &["downstream=[]"]].concat();
    let o = pretext(&common::run_args(
        "recipes/mlm-shakespeare-sample.toml",
        r,
        &sets,
    ));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // Cut short: export used to copy it into the Hugging Face directory as it was.
    let tok = run.join("tokenizer.json");
    let text = std::fs::read_to_string(&tok).unwrap();
    std::fs::write(&tok, &text[..text.len() / 2]).unwrap();
    let out = dir.join("export");
    for args in [
        &[
            "export",
            r,
            "--format",
            "hf",
            "--out",
            out.to_str().unwrap(),
        ][..],
        &["embed", "--model", r, "--text", "to be or not to be"][..],
        &["run", r][..],
    ] {
        refused(args, &["tokenizer.json"]);
    }
    std::fs::write(&tok, &text).unwrap();
    // The model's description (vocabulary, sizes, special ids) cut short.
    let cfg = run.join("text-config.json");
    let held = std::fs::read(&cfg).unwrap();
    std::fs::write(&cfg, &held[..held.len() / 3]).unwrap();
    for args in [
        &[
            "export",
            r,
            "--format",
            "hf",
            "--out",
            out.to_str().unwrap(),
        ][..],
        &["embed", "--model", r, "--text", "to be or not to be"][..],
    ] {
        refused(args, &["text-config.json"]);
    }
    assert!(!out.exists(), "nothing is exported");
    std::fs::remove_dir_all(&dir).unwrap();
}
