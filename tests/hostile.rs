//! Hostile input through the real binary: absurd sizes, special files, degenerate settings
//! and link loops. Each case must fail with exit code 1 and an error naming the file and the
//! key (or the file and what is wrong with it), within a time and address-space budget: no
//! panic, no abort, no hang, no silent success.
//!
//! The inputs that cannot live in git (a FIFO, a link loop, an image header declaring a
//! huge canvas) are made by the test itself in a temporary folder.

mod hostile_support;

use std::path::Path;
use std::process::Command;

use hostile_support::{mkfifo, refused, safetensors, scratch};

const QUICK: &str = "recipes/quickstart.toml";
const TEXT: &str = "recipes/mlm-shakespeare-sample.toml";
const AUDIO: &str = "recipes/audio-mae-words-sample.toml";
const FOLDER: &str = "recipes/mae-image-folder.toml";

#[test]
fn absurd_model_sizes_are_refused_before_allocating() {
    for (set, key) in [
        ("model.dim=1000000000", "`model.dim`"),
        ("model.mlp_dim=1000000000000", "`model.mlp_dim`"),
        ("model.depth=1000000", "`model.depth`"),
        ("objective.decoder.dim=1000000000", "`objective.decoder`"),
        // The largest integers TOML holds: the estimate saturates instead of wrapping.
        ("model.depth=9223372036854775807", "`model.depth`"),
        ("model.dim=9223372036854775804", "`model.dim`"),
        (
            "objective.decoder.dim=9223372036854775804",
            "`objective.decoder`",
        ),
    ] {
        let err = refused(&["recipe", "check", QUICK, "--set", set], &[QUICK, key]);
        assert!(err.contains("PRETEXT_MAX_ALLOC"), "{err}");
    }
}

#[test]
fn absurd_data_sizes_name_their_key() {
    for (recipe, set, key) in [
        (TEXT, "data.text.max_len=1000000000", "data.text.max_len"),
        (
            TEXT,
            "data.text.tokenizer.vocab_size=1000000000",
            "data.text.tokenizer.vocab_size",
        ),
        (AUDIO, "data.audio.frames=1000000000", "data.audio.frames"),
    ] {
        refused(&["recipe", "check", recipe, "--set", set], &[recipe, key]);
    }
}

#[test]
fn a_batch_too_large_for_the_machine_is_refused_before_the_run_directory_exists() {
    let dir = scratch("batch");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    refused(
        &[
            "run",
            QUICK,
            "--set",
            "train.batch_size=1000000000",
            "--out",
            out_s,
        ],
        &[QUICK, "train.batch_size"],
    );
    assert!(!out.exists(), "a refused run left {}", out.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_limit_can_be_lowered_and_raised() {
    // 1 MiB is less than the quickstart needs; the error says so and how to raise it.
    let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["recipe", "check", QUICK])
        .env("PRETEXT_MAX_ALLOC", "1M")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("1.0 MiB") && err.contains("PRETEXT_MAX_ALLOC"),
        "{err}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["recipe", "check", QUICK])
        .env("PRETEXT_MAX_ALLOC", "64G")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        report.contains("memory: about") && report.contains("limit 64.0 GiB"),
        "{report}"
    );
}

#[test]
fn degenerate_settings_are_errors_not_silent_runs() {
    for (set, key) in [
        ("model.norm_eps=-1.0", "`model.norm_eps`"),
        ("model.heads=7", "`model.heads`"),
        ("data.image.std=[inf]", "data.image.std"),
        ("data.image.std=[0.0]", "data.image.std"),
        ("data.image.mean=[nan]", "data.image.mean"),
        ("objective.mask_ratio=0.9999", "objective.mask_ratio"),
        ("data.image.patch=28", "objective.mask_ratio"),
        ("objective.decoder.mlp_dim=0", "objective.decoder.mlp_dim"),
    ] {
        refused(&["recipe", "check", QUICK, "--set", set], &[QUICK, key]);
    }
}

#[test]
fn special_files_are_refused_without_blocking() {
    let dir = scratch("fifo");
    let fifo = dir.join("images.gz");
    if !mkfifo(&fifo) {
        eprintln!("no mkfifo here; skipped");
        return;
    }
    let f = fifo.to_str().unwrap();
    let set = format!("data.train.images={f}");
    refused(
        &["recipe", "check", QUICK, "--set", &set],
        &[QUICK, "data.train.images", "FIFO"],
    );
    let png = dir.join("pipe.png");
    assert!(mkfifo(&png));
    refused(
        &[
            "embed",
            "--model",
            "tests/fixtures/hf/vit_model",
            "--image",
            png.to_str().unwrap(),
        ],
        &["pipe.png"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_link_loop_in_an_image_folder_is_refused() {
    let dir = scratch("loop");
    let src = Path::new("data/image-folder-sample/train");
    for class in std::fs::read_dir(src).unwrap() {
        let class = class.unwrap().path();
        let to = dir.join(class.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&class).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let first = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::os::unix::fs::symlink("..", first.join("again")).unwrap();
    let set = format!("data.train.root={}", dir.display());
    refused(
        &["recipe", "check", FOLDER, "--set", &set],
        &["again", "loop"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// CRC-32 (IEEE), for a PNG chunk.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (!(crc & 1)).wrapping_add(1));
        }
    }
    !crc
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

#[test]
fn an_image_declaring_a_huge_canvas_is_refused_before_decoding() {
    let dir = scratch("bomb");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit greyscale
    png.extend(chunk(b"IHDR", &ihdr));
    // An empty zlib stream: the header claims 10 GB of pixels, the file holds none.
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    let path = dir.join("bomb.png");
    std::fs::write(&path, &png).unwrap();
    let err = refused(
        &[
            "embed",
            "--model",
            "tests/fixtures/hf/vit_model",
            "--image",
            path.to_str().unwrap(),
        ],
        &["bomb.png", "100000 x 100000"],
    );
    assert!(!err.contains("memory allocation"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A safetensors file from a raw header and data.
#[test]
fn lying_safetensors_headers_name_the_tensor() {
    let dir = scratch("st");
    let four: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let cases = [
        (
            "twice.safetensors",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
            "`a` is named twice",
        ),
        (
            "shape.safetensors",
            r#"{"w":{"dtype":"F32","shape":[3,3],"data_offsets":[0,16]}}"#,
            "tensor `w`: shape [3, 3]",
        ),
        (
            "outside.safetensors",
            r#"{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#,
            "tensor `w`",
        ),
        (
            "dtype.safetensors",
            r#"{"w":{"dtype":"Q9","shape":[4],"data_offsets":[0,16]}}"#,
            "tensor `w`: dtype `Q9`",
        ),
        (
            "metadata.safetensors",
            r#"{"__metadata__":{"format":1},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            "`__metadata__`",
        ),
    ];
    for (name, header, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, safetensors(header, &four)).unwrap();
        let p = path.to_str().unwrap();
        refused(&["inspect", p], &[name, expected]);
        refused(
            &[
                "forward",
                "--model",
                "tests/fixtures/hf/vit_model",
                "--inputs",
                p,
                "--out",
                "/dev/null",
            ],
            &[name, expected],
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_inputs_and_weights_are_errors_naming_the_tensor() {
    let dir = scratch("nan");
    let mut values = vec![0f32; 3 * 224 * 224];
    values[7] = f32::NAN;
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = format!(
        r#"{{"pixel_values":{{"dtype":"F32","shape":[1,3,224,224],"data_offsets":[0,{}]}}}}"#,
        data.len()
    );
    let inputs = dir.join("inputs.safetensors");
    std::fs::write(&inputs, safetensors(&header, &data)).unwrap();
    let out = dir.join("out.safetensors");
    refused(
        &[
            "forward",
            "--model",
            "tests/fixtures/hf/vit_model",
            "--inputs",
            inputs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &["inputs.safetensors", "`pixel_values`", "NaN"],
    );
    assert!(!out.exists());
    // The same model with one weight made infinite.
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in std::fs::read_dir("tests/fixtures/hf/vit_model").unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, model.join(f.file_name().unwrap())).unwrap();
    }
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + n; // the first value of the first tensor's data
    bytes[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    std::fs::write(&weights, bytes).unwrap();
    refused(
        &[
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--image",
            "data/image-folder-sample/train/bag/00023.png",
        ],
        &["model.safetensors", "NaN or infinite"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_forward_inputs_are_errors_naming_the_tensor() {
    let dir = scratch("empty");
    let cases = [
        ("vit_model", "pixel_values", "[0,3,16,16]"),
        ("vit_mae_raw", "pixel_values", "[0,1,16,16]"),
        ("w2v2_group", "input_values", "[0,800]"),
        ("bert_model", "input_ids", "[2,0]"),
    ];
    for (model, name, shape) in cases {
        let header =
            format!(r#"{{"{name}":{{"dtype":"F32","shape":{shape},"data_offsets":[0,0]}}}}"#);
        let inputs = dir.join(format!("{model}.safetensors"));
        std::fs::write(&inputs, safetensors(&header, &[])).unwrap();
        refused(
            &[
                "forward",
                "--model",
                &format!("tests/fixtures/hf/{model}"),
                "--inputs",
                inputs.to_str().unwrap(),
                "--out",
                dir.join("out.safetensors").to_str().unwrap(),
            ],
            &[inputs.to_str().unwrap(), &format!("`{name}`")],
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_classifier_description_with_impossible_geometry_is_refused() {
    for (geometry, key) in [
        (r#"{"size":28,"channels":1,"patch":0}"#, "geometry.patch"),
        (
            r#"{"size":1048576,"channels":1,"patch":1}"#,
            "geometry.size",
        ),
        (r#"{"size":28,"channels":0,"patch":4}"#, "geometry.channels"),
    ] {
        let dir = scratch("spec");
        let spec = format!(
            r#"{{"kind":"image-classifier","geometry":{geometry},"encoder":{{"dim":16,"depth":1,"heads":2,"mlp_dim":32,"norm":"pre","activation":"gelu","norm_eps":1e-6,"qkv_bias":true,"dropout":0.0,"attention_dropout":0.0}},"num_labels":3,"pooling":"cls"}}"#
        );
        std::fs::write(dir.join("model.json"), spec).unwrap();
        std::fs::write(dir.join("model.safetensors"), safetensors("{}", &[])).unwrap();
        refused(
            &[
                "embed",
                "--model",
                dir.to_str().unwrap(),
                "--image",
                "data/image-folder-sample/train/bag/00023.png",
            ],
            &["model.json", key],
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_hugging_face_config_error_names_its_own_key() {
    for (key, value) in [
        ("num_hidden_layers", serde_json::json!(1_000_000u64)),
        (
            "num_hidden_layers",
            serde_json::json!(10_000_000_000_000_000_000u64),
        ),
        ("hidden_dropout_prob", serde_json::json!(1.5)),
        ("layer_norm_eps", serde_json::json!(-1.0)),
    ] {
        let dir = scratch("hfcfg");
        for f in std::fs::read_dir("tests/fixtures/hf/bert_model").unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
        let path = dir.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg[key] = value;
        std::fs::write(&path, cfg.to_string()).unwrap();
        refused(
            &["embed", "--model", dir.to_str().unwrap(), "--text", "hello"],
            &["config.json", &format!("`{key}`")],
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
