//! Running a text recipe: the tokenizer (loaded, trained, or the model source's), masked
//! language modelling on packed blocks of the training corpus with held-out masked-token
//! accuracy and perplexity at every checkpoint, then the downstream heads on the labelled
//! splits.
//!
//! A run directory holds everything needed to resume or export it: the resolved recipe,
//! `tokenizer.json`, checkpoints, `metrics.jsonl`, `eval.jsonl`, `summary.json`.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::downstream::{self, DownstreamResult};
use super::text_task::{Labelled, TextTask};
use super::{report, RunOptions, Summary};
use crate::backbone::Mode;
use crate::error::{Error, Result};
use crate::hf::source::AnyModel;
use crate::modality::text::corpus::{self, Document, JsonlFields, TextSplit};
use crate::modality::text::encoder::{TextConfig, TextEncoder, TextPositions};
use crate::modality::text::mask::MlmMasker;
use crate::modality::text::pack::{self, TokenBlocks};
use crate::modality::text::tokenizer::TextTokenizer;
use crate::objective::mlm::{Mlm, MlmBatch, MlmEval};
use crate::params::ParamStore;
use crate::recipe::{DataFormat, DataSource, Loaded, Recipe, TextSection};
use crate::train::metrics::MetricsLog;
use crate::train::{self, TrainTask};

/// The tokenizer's file name inside a run directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The run's [`TextConfig`], so that checkpoints can be loaded (and exported) on their own.
pub const CONFIG_FILE: &str = "text-config.json";
/// Held-out evaluations, one JSON line per checkpoint (and step 0).
pub const EVAL_FILE: &str = "eval.jsonl";
/// Held-out blocks evaluated at each checkpoint (the first ones, same masks every time).
const EVAL_BLOCKS: usize = 256;

/// Everything a text recipe needs, built and checked.
pub struct Prepared {
    pub device: Device,
    pub tokenizer: TextTokenizer,
    pub config: TextConfig,
    pub params: ParamStore,
    pub mlm: Mlm,
    pub train: TokenBlocks,
    pub test: Option<TokenBlocks>,
    pub masker: MlmMasker,
    /// Downstream splits and class names, when the recipe has heads.
    pub labelled: Option<(Labelled, Labelled, Vec<String>)>,
}

fn invalid(file: &Path, key: &str, message: impl Into<String>) -> Error {
    Error::InvalidValue {
        file: file.to_path_buf(),
        key: key.into(),
        message: message.into(),
    }
}

/// The documents of a source (`limit` applied).
fn documents(src: &DataSource, key: &str, file: &Path) -> Result<Vec<Document>> {
    let path = src
        .path
        .as_deref()
        .ok_or_else(|| invalid(file, &format!("{key}.path"), "missing"))?;
    let mut docs = match src.format {
        DataFormat::Jsonl => {
            let mut fields = JsonlFields::default();
            if let Some(t) = &src.text_field {
                fields.text = t.clone();
            }
            if let Some(l) = &src.label_field {
                fields.label = l.clone();
            }
            corpus::read_jsonl(path, &fields)?
        }
        _ if path.is_dir() => corpus::read_text_dir(path, TextSplit::File)?,
        _ => corpus::read_text_file(path, TextSplit::File)?,
    };
    if let Some(limit) = src.limit {
        docs.truncate(limit);
    }
    if docs.is_empty() {
        return Err(Error::data(path, format!("{key} has no documents")));
    }
    Ok(docs)
}

/// The tokenizer a recipe asks for: the run's own (resuming), a file, the model source's,
/// or one trained on the training documents.
fn tokenizer(
    r: &Recipe,
    text: &TextSection,
    file: &Path,
    run_dir: Option<&Path>,
    source_tokenizer: Option<&Path>,
    train_docs: &[Document],
) -> Result<TextTokenizer> {
    if let Some(saved) = run_dir
        .map(|d| d.join(TOKENIZER_FILE))
        .filter(|p| p.is_file())
    {
        return TextTokenizer::from_file(&saved);
    }
    match &text.tokenizer {
        Some(t) => match (&t.file, t.train) {
            (Some(path), _) => TextTokenizer::from_file(path),
            (None, Some(kind)) => {
                let started = Instant::now();
                let tok = TextTokenizer::train(
                    kind,
                    t.vocab_size,
                    t.lowercase,
                    train_docs.iter().map(|d| d.text.as_str()),
                )?;
                eprintln!(
                    "trained a {kind:?} tokenizer of {} tokens on {} documents in {:.1} s",
                    tok.vocab_size(),
                    train_docs.len(),
                    started.elapsed().as_secs_f64()
                );
                Ok(tok)
            }
            (None, None) => Err(invalid(
                file,
                "data.text.tokenizer",
                "give `file` or `train`",
            )),
        },
        None => match source_tokenizer {
            Some(p) => TextTokenizer::from_file(p),
            None => Err(invalid(
                file,
                "model.source",
                format!(
                    "`{}` has no tokenizer.json; set data.text.tokenizer",
                    r.model.source.as_deref().unwrap_or_default()
                ),
            )),
        },
    }
}

/// The encoder a fresh run trains: the recipe's shape (post-norm, BERT's embeddings), the
/// tokenizer's vocabulary, positions for `max_len` tokens.
fn fresh_config(r: &Recipe, text: &TextSection, tok: &TextTokenizer) -> TextConfig {
    TextConfig {
        vocab_size: tok.vocab_size(),
        max_positions: text.max_len,
        type_vocab_size: 2,
        pad_token_id: tok.pad_id(),
        positions: TextPositions::Absolute,
        embed_norm_eps: r.model.norm_eps,
        encoder: r.model.encoder_config(),
    }
}

/// Builds everything: data, tokenizer, model (fresh or from `model.source`).
pub fn prepare(r: &Recipe, file: &Path, run_dir: Option<&Path>) -> Result<Prepared> {
    crate::recipe::check_paths(r, file)?;
    let text = r
        .data
        .text
        .as_ref()
        .ok_or_else(|| invalid(file, "data.text", "missing"))?;
    let device = crate::device::open(crate::device::parse(&r.device).map_err(Error::Usage)?)?;
    let source = match &r.model.source {
        Some(s) => match crate::hf::source::load_any(s, &device)? {
            AnyModel::Text(t) => Some(t),
            other => {
                return Err(invalid(
                    file,
                    "model.source",
                    format!(
                        "`{s}` is {}; text recipes need a BERT or RoBERTa model",
                        other.describe()
                    ),
                ))
            }
        },
        None => None,
    };
    let train_docs = documents(&r.data.train, "data.train", file)?;
    let tok = tokenizer(
        r,
        text,
        file,
        run_dir,
        source.as_ref().and_then(|s| s.tokenizer.as_deref()),
        &train_docs,
    )?;
    let config = match &source {
        Some(s) => {
            if tok.vocab_size() > s.spec.config.vocab_size {
                return Err(invalid(
                    file,
                    "data.text.tokenizer",
                    format!(
                        "the tokenizer has {} tokens but the model's vocabulary has {}",
                        tok.vocab_size(),
                        s.spec.config.vocab_size
                    ),
                ));
            }
            s.spec.config.clone()
        }
        None => fresh_config(r, text, &tok),
    };
    let max_len = text.max_len.min(config.max_len());
    let params = ParamStore::new(r.seed);
    let mlm = Mlm::new(&config, params.var_builder(&device))?;
    if let Some(s) = &source {
        // The source's encoder (and MLM head, when it has one); the rest keeps its seeded
        // initialisation.
        let ours: std::collections::BTreeMap<_, _> = s
            .tensors
            .iter()
            .filter(|(k, _)| k.starts_with("text.") || k.starts_with("mlm."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let missing: Vec<String> = params
            .vars_with_prefix("text.")
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !ours.contains_key(k))
            .collect();
        if !missing.is_empty() {
            return Err(Error::data(
                &s.origin,
                format!(
                    "the model source lacks encoder tensors: {}",
                    missing.join(", ")
                ),
            ));
        }
        params.load_partial(&ours, Path::new(&s.origin))?;
    }
    let train = pack::pack_blocks(&train_docs, &tok, max_len)?;
    let test = match &r.data.test {
        Some(t) => Some(pack::pack_blocks(
            &documents(t, "data.test", file)?,
            &tok,
            max_len,
        )?),
        None => None,
    };
    let mut masker = MlmMasker::new(&tok);
    masker.rate = r.objective.mask_ratio();
    masker.whole_word = r.objective.whole_word;
    masker.span = r.objective.span;
    let labelled = if r.downstream.is_empty() {
        None
    } else {
        let (train_src, test_src, train_key, test_key) = match &r.data.labelled {
            Some(l) => (
                &l.train,
                &l.test,
                "data.labelled.train",
                "data.labelled.test",
            ),
            None => (
                &r.data.train,
                r.data.test.as_ref().ok_or_else(|| {
                    invalid(file, "data.test", "downstream heads need a test split")
                })?,
                "data.train",
                "data.test",
            ),
        };
        let train_docs = documents(train_src, train_key, file)?;
        let test_docs = documents(test_src, test_key, file)?;
        let names = corpus::class_names(&train_docs)?;
        let encode = |docs: &[Document]| -> Result<Labelled> {
            let seqs = pack::encode_labelled(docs, &tok, max_len, &names)?;
            Ok(Labelled {
                ids: seqs.ids,
                labels: seqs.labels.into_iter().map(|l| l as u32).collect(),
            })
        };
        Some((encode(&train_docs)?, encode(&test_docs)?, names))
    };
    Ok(Prepared {
        device,
        tokenizer: tok,
        config,
        params,
        mlm,
        train,
        test,
        masker,
        labelled,
    })
}

/// Masked language modelling on packed blocks.
pub struct MlmTask<'a> {
    pub mlm: &'a Mlm,
    pub blocks: &'a TokenBlocks,
    pub held_out: Option<&'a TokenBlocks>,
    pub masker: &'a MlmMasker,
    pub device: Device,
    pub seed: u64,
    pub eval_log: std::sync::Mutex<Option<MetricsLog>>,
}

#[derive(Serialize)]
struct EvalRecord {
    step: usize,
    #[serde(flatten)]
    eval: MlmEval,
}

impl MlmTask<'_> {
    fn batch(&self, blocks: &TokenBlocks, idx: &[usize], rng: &mut ChaCha8Rng) -> Result<MlmBatch> {
        let t = blocks.seq_len;
        let mut ids = Vec::with_capacity(idx.len() * t);
        let mut mask = Vec::with_capacity(idx.len() * t);
        let mut labels = Vec::with_capacity(idx.len() * t);
        for &i in idx {
            let block = blocks.get(i);
            let (masked, l) = self.masker.apply(block.ids, block.word_ids, rng);
            ids.extend(masked);
            labels.extend(l);
            mask.extend(block.attention_mask.iter().map(|&a| a as f32));
        }
        MlmBatch::new(ids, mask, &labels, (idx.len(), t), &self.device)
    }

    /// Masked-token accuracy and perplexity on the first held-out blocks, with the same
    /// masks every time (a fixed seed), so evaluations are comparable across checkpoints.
    pub fn evaluate(&self) -> Result<Option<MlmEval>> {
        let Some(held_out) = self.held_out else {
            return Ok(None);
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6d6c_6d65);
        let n = held_out.len().min(EVAL_BLOCKS);
        let all: Vec<usize> = (0..n).collect();
        let (mut loss, mut hits, mut count) = (0.0, 0, 0);
        for chunk in all.chunks(32) {
            let b = self.batch(held_out, chunk, &mut rng)?;
            let (l, h, c) = self.mlm.score(&b)?;
            loss += l;
            hits += h;
            count += c;
        }
        Ok(Some(MlmEval::from_sums(loss, hits, count)))
    }

    /// Evaluates and appends to `eval.jsonl`.
    pub fn log_eval(&self, step: usize) -> Result<Option<MlmEval>> {
        let Some(e) = self.evaluate()? else {
            return Ok(None);
        };
        eprintln!(
            "held-out MLM at step {step}: loss {:.4}, perplexity {:.2}, masked-token accuracy {:.2} % ({} tokens)",
            e.loss,
            e.perplexity,
            e.accuracy * 100.0,
            e.tokens
        );
        if let Some(log) = self
            .eval_log
            .lock()
            .map_err(|_| Error::Usage("the eval log lock is poisoned".into()))?
            .as_mut()
        {
            log.log(&EvalRecord { step, eval: e })?;
        }
        Ok(Some(e))
    }
}

impl TrainTask for MlmTask<'_> {
    fn num_examples(&self) -> usize {
        self.blocks.len()
    }

    fn infer(&self, params: &ParamStore, indices: &[usize]) -> Result<Option<Tensor>> {
        let t = self.blocks.seq_len;
        let mut ids = Vec::with_capacity(indices.len() * t);
        let mut mask = Vec::with_capacity(indices.len() * t);
        for &i in indices {
            let block = self.blocks.get(i);
            ids.extend_from_slice(block.ids);
            mask.extend(block.attention_mask.iter().map(|&a| a as f32));
        }
        let ids = Tensor::from_vec(ids, (indices.len(), t), &self.device)?;
        let mask = Tensor::from_vec(mask, (indices.len(), t), &self.device)?;
        let text = TextEncoder::new(
            self.mlm.text.config(),
            params.frozen_var_builder(&self.device).pp("text"),
        )?;
        Ok(Some(text.forward(
            &ids,
            None,
            Some(&mask),
            &mut Mode::Eval,
        )?))
    }

    fn loss(&self, indices: &[usize], rng: &mut ChaCha8Rng) -> Result<candle_core::Tensor> {
        let batch = self.batch(self.blocks, indices, rng)?;
        let mut mode = Mode::Train(rng);
        Ok(self.mlm.forward(&batch, &mut mode)?.loss)
    }

    fn on_checkpoint(&self, step: usize, _run_dir: &Path) -> Result<()> {
        self.log_eval(step).map(|_| ())
    }
}

/// Validates a text recipe through one masked batch, without training.
pub fn dry_run(loaded: &Loaded) -> Result<String> {
    let r = &loaded.recipe;
    let p = prepare(r, &loaded.file, None)?;
    let task = MlmTask {
        mlm: &p.mlm,
        blocks: &p.train,
        held_out: None,
        masker: &p.masker,
        device: p.device.clone(),
        seed: r.seed,
        eval_log: std::sync::Mutex::new(None),
    };
    let b = r.train.batch_size.min(p.train.len());
    let idx: Vec<usize> = (0..b).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(r.seed);
    let batch = task.batch(&p.train, &idx, &mut rng)?;
    let out = p.mlm.forward(&batch, &mut Mode::Eval)?;
    let loss = out.loss.to_scalar::<f32>()?;
    if !loss.is_finite() {
        return Err(Error::NonFinite { step: 0, loss });
    }
    let mut report = format!(
        "recipe `{}` is valid\n  tokenizer: {} tokens\n  train: {} blocks of {} tokens{}\n  model: mlm, {} parameters ({} in the encoder)\n  batch: {:?} ids -> {} masked tokens -> logits {:?}\n  initial loss: {loss:.4} (uniform guess: {:.4})\n",
        r.name,
        p.tokenizer.vocab_size(),
        p.train.len(),
        p.train.seq_len,
        p.test
            .as_ref()
            .map_or(String::new(), |t| format!(", test: {} blocks", t.len())),
        p.params.num_params(),
        p.params.num_params_with_prefix("text."),
        batch.input_ids.dims(),
        batch.num_predicted(),
        out.logits.dims(),
        (p.config.vocab_size as f64).ln(),
    );
    if let Some((train, test, names)) = &p.labelled {
        report.push_str(&format!(
            "  downstream: {} heads on {} train / {} test examples, {} classes\n",
            r.downstream.len(),
            train.ids.len(),
            test.ids.len(),
            names.len()
        ));
    }
    Ok(report)
}

/// Starts a new text run.
pub fn start(loaded: &Loaded, opts: &RunOptions) -> Result<Summary> {
    let prepared = prepare(&loaded.recipe, &loaded.file, None)?;
    let run_dir = super::new_run_dir(loaded, opts)?;
    prepared.tokenizer.save(run_dir.join(TOKENIZER_FILE))?;
    execute(prepared, &loaded.recipe, &run_dir, opts)
}

/// Resumes a text run from its directory (its own tokenizer).
pub fn resume(loaded: &Loaded, run_dir: &Path, opts: &RunOptions) -> Result<Summary> {
    let prepared = prepare(&loaded.recipe, &loaded.file, Some(run_dir))?;
    execute(prepared, &loaded.recipe, run_dir, opts)
}

fn execute(p: Prepared, r: &Recipe, run_dir: &Path, opts: &RunOptions) -> Result<Summary> {
    let json =
        serde_json::to_string_pretty(&p.config).map_err(|e| Error::data(run_dir, e.to_string()))?;
    crate::tensor_io::write_atomic(&run_dir.join(CONFIG_FILE), json.as_bytes())?;
    let ckpt = super::latest_checkpoint(run_dir, &p.device)?;
    let resume_step = ckpt.as_ref().map(|c| c.state.step);
    let task = MlmTask {
        mlm: &p.mlm,
        blocks: &p.train,
        held_out: p.test.as_ref(),
        masker: &p.masker,
        device: p.device.clone(),
        seed: r.seed,
        eval_log: std::sync::Mutex::new(Some(MetricsLog::open(
            &run_dir.join(EVAL_FILE),
            Some(resume_step.unwrap_or(0)),
        )?)),
    };
    let started = Instant::now();
    let (step, last_loss, samples_per_s) = if r.train.steps == 0 {
        (0, f32::NAN, 0.0)
    } else {
        if resume_step.is_none() {
            task.log_eval(0)?;
        }
        let outcome = train::train(
            &task,
            &p.params,
            &r.train,
            r.seed,
            run_dir,
            ckpt,
            opts.stop_after,
            opts.driver.as_ref(),
        )?;
        (outcome.step, outcome.last_loss, outcome.samples_per_s)
    };
    let pretrain_seconds = started.elapsed().as_secs_f64();
    let held_out = if step == r.train.steps && r.train.steps > 0 {
        task.evaluate()?
    } else {
        None
    };

    let mut results: Vec<DownstreamResult> = Vec::new();
    if step == r.train.steps && !opts.skip_downstream {
        if let Some((train, test, names)) = &p.labelled {
            let dt = TextTask {
                train,
                test,
                label_names: names,
                config: p.config.clone(),
                pretrained: &p.params,
                seed: r.seed,
                device: &p.device,
            };
            results = downstream::Downstream {
                run_dir,
                task: &dt,
                pretrain_steps: step,
                seed: r.seed,
                device: &p.device,
            }
            .run(&r.downstream)?;
        }
    }
    let label_efficiency = report::write(run_dir, &results)?;
    let summary = Summary {
        name: r.name.clone(),
        run_dir: run_dir.to_path_buf(),
        steps: step,
        final_loss: last_loss,
        samples_per_s,
        pretrain_seconds,
        data_wait_seconds: 0.0,
        encoder_parameters: p.params.num_params_with_prefix("text."),
        total_parameters: p.params.num_params(),
        held_out_mlm: held_out,
        downstream: results,
        label_efficiency,
    };
    super::write_summary(run_dir, &summary)?;
    Ok(summary)
}
