//! Loading, overrides, presets and validation errors.

use super::*;

const MINIMAL: &str = r#"
name = "t"
[model]
preset = "vit-mini"
[data]
modality = "image"
train = { format = "idx", images = "a.gz" }
image = { size = 28, channels = 1, patch = 4 }
[objective]
kind = "mae"
decoder = { dim = 32, depth = 1, heads = 2 }
[train]
steps = 10
batch_size = 4
optimizer = { kind = "adamw", lr = 1e-3 }
"#;

fn load(text: &str, o: &[Override]) -> Result<Loaded> {
    load_str(text, Path::new("r.toml"), o)
}

#[test]
fn misspelled_key_names_file_key_and_suggestion() {
    let text = MINIMAL.replace("kind = \"mae\"", "kind = \"mae\"\nmask_rato = 0.5");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("r.toml"), "{err}");
    assert!(err.contains("objective.mask_rato"), "{err}");
    assert!(err.contains("did you mean `objective.mask_ratio`"), "{err}");
}

#[test]
fn misspelled_top_level_and_inline_keys() {
    let err = load(
        &MINIMAL
            .replace("seed", "x")
            .replace("name = \"t\"", "name = \"t\"\nsede = 1"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unknown key `sede`") && err.contains("`seed`"),
        "{err}"
    );
    let err = load(
        &MINIMAL.replace("lr = 1e-3", "lr = 1e-3, weight_decy = 0.1"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("train.optimizer.weight_decy"), "{err}");
    assert!(err.contains("train.optimizer.weight_decay"), "{err}");
}

#[test]
fn wrong_type_and_range_name_the_key() {
    let err = load(&MINIMAL.replace("steps = 10", "steps = \"ten\""), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.steps"), "{err}");
    let err = load(
        MINIMAL,
        &[Override::parse_set("objective.mask_ratio=1.5").unwrap()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("objective.mask_ratio") && err.contains("(0, 1)"),
        "{err}"
    );
}

#[test]
fn a_name_that_is_not_a_plain_directory_name_is_refused() {
    for bad in ["..", ".", ".hidden", "a/b", ""] {
        let err = load(
            &MINIMAL.replace("name = \"t\"", &format!("name = {bad:?}")),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("r.toml") && err.contains("name"),
            "{bad:?}: {err}"
        );
    }
    load(
        &MINIMAL.replace("name = \"t\"", "name = \"mae.v2-small_1\""),
        &[],
    )
    .unwrap();
}

#[test]
fn malformed_toml_names_file_and_line() {
    let err = load("name = \"t\"\n[model\n", &[]).unwrap_err().to_string();
    assert!(err.contains("r.toml") && err.contains("line 2"), "{err}");
}

#[test]
fn preset_fills_and_recipe_wins() {
    let r = load(MINIMAL, &[]).unwrap().recipe;
    let preset: toml::Table = toml::from_str(PRESETS[1].1).unwrap();
    assert_eq!(r.model.dim as i64, preset["dim"].as_integer().unwrap());
    let r = load(MINIMAL, &[Override::parse_set("model.depth=1").unwrap()])
        .unwrap()
        .recipe;
    assert_eq!(r.model.depth, 1);
    let err = load(&MINIMAL.replace("vit-mini", "vit-qiuck"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean `vit-mini`"), "{err}");
    // A preset file that is not there: named with the recipe and key that point at it
    // (found by fuzzing, which mutated `vit-mini` into `vit.toml`).
    let err = load(&MINIMAL.replace("vit-mini", "vit.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("r.toml") && err.contains("model.preset") && err.contains("vit.toml"),
        "{err}"
    );
}

#[test]
fn set_and_unset() {
    let r = load(
        MINIMAL,
        &[
            Override::parse_set("train.schedule.kind=cosine").unwrap(),
            Override::parse_set("name=other").unwrap(),
            Override::Unset("train.optimizer.lr".into()),
            Override::parse_set("train.optimizer.lr=0.5").unwrap(),
        ],
    )
    .unwrap()
    .recipe;
    assert_eq!(r.train.schedule.kind, ScheduleKind::Cosine);
    assert_eq!(r.name, "other");
    assert_eq!(r.train.optimizer.lr, 0.5);
    let err = load(MINIMAL, &[Override::Unset("train.steps".into())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("train") && err.contains("steps"), "{err}");
    assert!(Override::parse_set("novalue").is_err());
}

#[test]
fn resolved_recipe_round_trips() {
    let r = load(MINIMAL, &[]).unwrap().recipe;
    let again = load(&to_toml(&r), &[]).unwrap().recipe;
    assert_eq!(r, again);
}

#[test]
fn a_key_of_another_source_format_is_unknown_with_its_format_and_a_suggestion() {
    let text = MINIMAL.replace("images = \"a.gz\"", "images = \"a.gz\", label = \"b.gz\"");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(
        err.contains("unknown key `data.train.label` for format = \"idx\"")
            && err.contains("did you mean `data.train.labels`"),
        "{err}"
    );
    let text = MINIMAL.replace("images = \"a.gz\"", "root = \"d\"");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(
        err.contains("`data.train.root` for format = \"idx\"")
            && err.contains("images, labels, limit"),
        "{err}"
    );
    let text = MINIMAL.replace("format = \"idx\", images = \"a.gz\"", "format = \"idx\"");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("`data.train.images`: required"), "{err}");
}

#[test]
fn objective_keys_belong_to_their_kind() {
    // SimMIM has no decoder: the key is unknown for that kind, with the keys it takes.
    let text = MINIMAL.replace("kind = \"mae\"", "kind = \"simmim\"");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(
        err.contains("unknown key `objective.decoder` for kind = \"simmim\"")
            && err.contains("mask_ratio, masking, norm_pix_loss"),
        "{err}"
    );
    // MAE needs one.
    let err = load(
        &MINIMAL.replace("decoder = { dim = 32, depth = 1, heads = 2 }", ""),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`objective.decoder`: required"), "{err}");
    // A text-only key on an image objective.
    let err = load(
        MINIMAL,
        &[Override::parse_set("objective.span={}").unwrap()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unknown key `objective.span` for kind = \"mae\""),
        "{err}"
    );
    // No objective at all, where something is pretrained.
    let err = load(MINIMAL, &[Override::Unset("objective".into())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`objective`: required"), "{err}");
}

#[test]
fn recipes_resolved_before_objectives_were_tagged_still_load() {
    // What a run directory's recipe.toml held: every kind's keys at their defaults.
    let old = MINIMAL.replace(
        "kind = \"mae\"",
        "kind = \"mae\"\nmasking = \"random\"\nnorm_pix_loss = true\nwhole_word = false",
    );
    let loaded = load(&old, &[]).unwrap();
    assert_eq!(
        loaded.recipe.objective().unwrap().kind(),
        ObjectiveKind::Mae
    );
    // A non-default key of another kind is still an error.
    let wrong = MINIMAL.replace("kind = \"mae\"", "kind = \"mae\"\nwhole_word = true");
    let err = load(&wrong, &[]).unwrap_err().to_string();
    assert!(err.contains("objective.whole_word"), "{err}");
}

fn labelled() -> String {
    MINIMAL.replace(
        "images = \"a.gz\" }",
        "images = \"a.gz\", labels = \"l.gz\" }\ntest = { format = \"idx\", images = \"t.gz\", labels = \"u.gz\" }",
    )
}

#[test]
fn downstream_keys_belong_to_their_head() {
    let with = |section: &str| format!("{}\n[[downstream]]\n{section}\n", labelled());
    let err = load(&with("head = \"linear-probe\"\nk = 5"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown key `downstream[0].k` for head = \"linear-probe\"")
            && err.contains("epochs"),
        "{err}"
    );
    let err = load(&with("head = \"knn\"\nlayer_decy = 0.7"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("downstream[0].layer_decy"), "{err}");
    let loaded = load(&with("head = \"fine-tune\"\nlayer_decay = 0.75"), &[]).unwrap();
    let d = &loaded.recipe.downstream[0];
    assert_eq!(
        (d.head, d.layer_decay, d.epochs()),
        (HeadKind::FineTune, 0.75, 10)
    );
    // The resolved recipe writes only the head's own keys, and reads back the same.
    let text = to_toml(&loaded.recipe);
    assert!(!text.contains("temperature"), "{text}");
    assert_eq!(load(&text, &[]).unwrap().recipe, loaded.recipe);
}

#[test]
fn downstream_tables_resolved_before_heads_were_tagged_still_load() {
    // What a run directory's recipe.toml held: every head's keys at their defaults.
    let old = format!(
        "{}\n[[downstream]]\nhead = \"linear-probe\"\npooling = \"cls\"\nlabel_fractions = [1.0]\nweight_decay = 0.0\nbatch_size = 256\nwarmup_fraction = 0.1\nlayer_decay = 1.0\nlabel_smoothing = 0.0\nk = 20\ntemperature = 0.07\n",
        labelled()
    );
    let loaded = load(&old, &[]).unwrap();
    assert_eq!(loaded.recipe.downstream[0].head, HeadKind::LinearProbe);
}

#[test]
fn an_objective_of_another_modality_names_the_ones_that_fit() {
    let text = MINIMAL.replace(
        "kind = \"mae\"\ndecoder = { dim = 32, depth = 1, heads = 2 }",
        "kind = \"mlm\"",
    );
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("objective.kind"), "{err}");
    assert!(
        err.contains(
            "image recipes pretrain with kind = \"mae\", \"simmim\" or \"data2vec\", not \"mlm\""
        ),
        "{err}"
    );
}

#[test]
fn every_modality_is_registered_under_its_recipe_name() {
    for m in [Modality::Image, Modality::Text, Modality::Audio] {
        let spelled = toml::Value::try_from(m).unwrap();
        assert_eq!(spelled.as_str(), Some(m.recipe().name));
        assert!(!m.recipe().objectives.is_empty());
    }
}

#[test]
fn a_pooler_is_for_text_fine_tuning_on_the_cls_token() {
    let set = |s: &str| Override::parse_set(s).unwrap();
    // An image recipe: the pooler is named as text-only.
    let err = load(
        MINIMAL,
        &[set(
            r#"downstream=[{ head = "fine-tune", pooler = "tanh-cls" }]"#,
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("downstream[0].pooler") && err.contains("text"),
        "{err}"
    );
    // Not a key of the other heads.
    let err = load(
        MINIMAL,
        &[set(
            r#"downstream=[{ head = "linear-probe", pooler = "tanh-cls" }]"#,
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pooler"), "{err}");
}

#[test]
fn heads_sharing_a_label_get_rows_of_their_own() {
    let set = |s: &str| Override::parse_set(s).unwrap();
    let r = load(
        MINIMAL,
        &[
            set(r#"data.train={ format = "idx", images = "a.gz", labels = "b.gz" }"#),
            set(r#"data.test={ format = "idx", images = "c.gz", labels = "d.gz" }"#),
            set(
            r#"downstream=[{ head = "fine-tune", pooling = "cls" }, { head = "fine-tune", pooling = "mean" }, { head = "fine-tune", pooling = "mean", lr = 1e-4 }, { head = "linear-probe" }, { head = "fine-tune", pooling = "mean", drop_path = 0.1, augment = { hflip = 0.5 } }, { head = "fine-tune", pooling = "mean", drop_path = 0.1 }]"#,
            ),
        ],
    )
    .unwrap()
    .recipe;
    assert_eq!(
        head::method_names(&r.downstream),
        [
            "fine-tune (pretrained, cls pooling)",
            "fine-tune (pretrained, mean pooling) #1",
            "fine-tune (pretrained, mean pooling) #2",
            "linear probe (pretrained)",
            "fine-tune (pretrained, mean pooling, augmented, drop path 0.1)",
            "fine-tune (pretrained, mean pooling, drop path 0.1)",
        ]
    );
}

#[test]
fn the_memory_estimate_counts_the_data2vec_teacher() {
    let mae = load(MINIMAL, &[]).unwrap().recipe;
    let d2v = load(
        &MINIMAL.replace("kind = \"mae\"", "kind = \"data2vec\""),
        &[],
    )
    .unwrap()
    .recipe;
    let m = memory::estimate(&mae).unwrap();
    let d = memory::estimate(&d2v).unwrap();
    assert_eq!(m.teacher, 0);
    assert!(!m.to_string().contains("teacher"), "{m}");
    // The teacher: encoder, embeddings and encoder position table, then per example the
    // top-K block outputs and their average (K = 2 of vit-mini's blocks by default).
    let enc = d2v.model.encoder_config();
    let tokens = (d2v.data.modality.recipe().footprint)(&d2v).unwrap().tokens;
    let k = (2 * enc.depth).div_ceil(3) as u128;
    let per_example = 4 * (k + 1) * tokens * enc.dim as u128;
    assert_eq!(
        d.teacher,
        d.encoder + d.embeddings + 4 * tokens * enc.dim as u128 + 4 * per_example
    );
    assert_eq!(d.total(), d.weights() + d.optimizer + d.teacher + d.batch);
    assert!(d.to_string().contains("EMA teacher"), "{d}");
    assert_eq!(d.encoder, m.encoder);
}
