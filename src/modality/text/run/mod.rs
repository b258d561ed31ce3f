//! Running a text recipe: the tokenizer (loaded, trained, or the model source's), masked
//! language modelling on packed blocks of the training corpus with held-out masked-token
//! accuracy and perplexity at every checkpoint, then the downstream heads on the labelled
//! splits.
//!
//! A run directory holds everything needed to resume or export it: the resolved recipe,
//! `tokenizer.json`, checkpoints, `metrics.jsonl`, `eval.jsonl`, `summary.json`.

pub mod objective;
pub mod pretrain;
pub mod task;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;

use crate::backbone::Mode;
use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::modality::text::corpus::{self, Document, JsonlFields, TextSplit};
use crate::modality::text::encoder::{TextConfig, TextPositions};
use crate::modality::text::pack::{self, TokenBlocks};
use crate::modality::text::shards::{self, MappedBlocks, TokenStream};
use crate::modality::text::stream::Corpus;
use crate::modality::text::tokenizer::TextTokenizer;
use crate::params::ParamStore;
use crate::recipe::{DataSource, Recipe, TextSection};
use crate::run::classify::Task;
use crate::run::downstream::DownstreamTask;
use crate::run::source::AnyModel;
use crate::run::{invalid, Model, Pipeline, PretrainStage};
use crate::train::metrics::MetricsLog;
use objective::TextObjective;
use pretrain::MlmTask;
use task::{Examples, TextSplits};

/// The tokenizer's file name inside a run directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The run's [`TextConfig`], so that checkpoints can be loaded (and exported) on their own.
pub const CONFIG_FILE: &str = "text-config.json";
/// Held-out evaluations, one JSON line per checkpoint (and step 0).
pub const EVAL_FILE: &str = "eval.jsonl";

/// Everything a text recipe needs, built and checked.
pub struct Prepared {
    pub model: Model,
    pub tokenizer: TextTokenizer,
    pub config: TextConfig,
    /// MLM or data2vec.
    pub objective: TextObjective,
    /// The training corpus's blocks, packed on demand from its token cache; shared with the
    /// training loader's thread.
    pub train: Arc<MappedBlocks>,
    pub test: Option<TokenBlocks>,
    /// Downstream splits and class names, when the recipe has heads.
    pub labelled: Option<(Examples, Examples, Vec<String>)>,
}

/// A JSON-lines source's field names: the recipe's, else the defaults.
fn jsonl_fields(text: &Option<String>, label: &Option<String>) -> JsonlFields {
    let mut fields = JsonlFields::default();
    if let Some(t) = text {
        fields.text = t.clone();
    }
    if let Some(l) = label {
        fields.label = l.clone();
    }
    fields
}

/// The documents of a source (`limit` applied).
fn documents(src: &DataSource, key: &str, file: &Path) -> Result<Vec<Document>> {
    let (mut docs, path) = match src {
        DataSource::Jsonl {
            path,
            text_field,
            label_field,
            ..
        } => (
            corpus::read_jsonl(path, &jsonl_fields(text_field, label_field))?,
            path,
        ),
        DataSource::Text { path, .. } if path.is_dir() => {
            (corpus::read_text_dir(path, TextSplit::File)?, path)
        }
        DataSource::Text { path, .. } => (corpus::read_text_file(path, TextSplit::File)?, path),
        _ => {
            return Err(crate::recipe::source::wrong_format(
                file,
                key,
                src,
                "text recipes read format = \"text\" or \"jsonl\"",
            ))
        }
    };
    if let Some(limit) = src.limit() {
        docs.truncate(limit);
    }
    if docs.is_empty() {
        return Err(Error::data(path, format!("{key} has no documents")));
    }
    Ok(docs)
}

/// The training corpus of a source, to be read one document at a time.
fn train_corpus(src: &DataSource, key: &str, file: &Path) -> Result<Corpus> {
    match src {
        DataSource::Jsonl {
            path,
            text_field,
            label_field,
            limit,
        } => Ok(Corpus::jsonl(
            path,
            jsonl_fields(text_field, label_field),
            *limit,
        )),
        DataSource::Text { path, limit } => Corpus::text(path, *limit),
        _ => Err(crate::recipe::source::wrong_format(
            file,
            key,
            src,
            "text recipes read format = \"text\" or \"jsonl\"",
        )),
    }
}

/// The tokenizer a recipe asks for: the run's own (resuming), a file, the model source's,
/// or one trained on the training documents.
fn tokenizer(
    r: &Recipe,
    text: &TextSection,
    file: &Path,
    run_dir: Option<&Path>,
    source_tokenizer: Option<&Path>,
    train: &Corpus,
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
                let (tok, docs) = train.train_tokenizer(kind, t.vocab_size, t.lowercase)?;
                eprintln!(
                    "trained a {kind:?} tokenizer of {} tokens on {docs} documents in {:.1} s",
                    tok.vocab_size(),
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

/// The training corpus tokenised: its token cache, reused or built.
fn tokens(train: &Corpus, tok: &TextTokenizer, file: &Path) -> Result<TokenStream> {
    let started = Instant::now();
    let stream = TokenStream::open_or_build(&shards::cache_root(), train, tok)?;
    if stream.documents() == 0 {
        return Err(invalid(file, "data.train", "has no documents with text"));
    }
    eprintln!(
        "{} the token cache {}: {} tokens from {} documents in {:.1} s",
        if stream.reused() { "read" } else { "built" },
        stream.dir().display(),
        stream.len(),
        stream.documents(),
        started.elapsed().as_secs_f64()
    );
    Ok(stream)
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
pub fn prepare(
    r: &Recipe,
    file: &Path,
    run_dir: Option<&Path>,
    device: Device,
) -> Result<Prepared> {
    let text = r
        .data
        .text
        .as_ref()
        .ok_or_else(|| invalid(file, "data.text", "missing"))?;
    let source = match &r.model.source {
        Some(s) => match crate::run::source::load_any(s, &device)? {
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
    let train_corpus = train_corpus(&r.data.train, "data.train", file)?;
    let tok = tokenizer(
        r,
        text,
        file,
        run_dir,
        source.as_ref().and_then(|s| s.tokenizer.as_deref()),
        &train_corpus,
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
    let objective = TextObjective::new(r, file, &config, &tok, &params, &device)?;
    if let Some(s) = &source {
        // The source's encoder (and MLM head, when it has one and the objective is MLM);
        // the rest keeps its seeded initialisation.
        let prefixes = objective.source_prefixes();
        let ours: std::collections::BTreeMap<_, _> = s
            .tensors
            .iter()
            .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
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
    let train = Arc::new(MappedBlocks::new(
        tokens(&train_corpus, &tok, file)?,
        &tok,
        max_len,
    )?);
    let test = match &r.data.test {
        Some(t) => Some(pack::pack_blocks(
            &documents(t, "data.test", file)?,
            &tok,
            max_len,
        )?),
        None => None,
    };
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
        let encode = |docs: &[Document]| -> Result<Examples> {
            let seqs = pack::encode_labelled(docs, &tok, max_len, &names)?;
            Ok(Examples {
                ids: seqs.ids,
                labels: seqs.labels.into_iter().map(|l| l as u32).collect(),
            })
        };
        Some((encode(&train_docs)?, encode(&test_docs)?, names))
    };
    Ok(Prepared {
        model: Model {
            device,
            params,
            encoder_prefix: "text.",
        },
        tokenizer: tok,
        config,
        objective,
        train,
        test,
        labelled,
    })
}

impl Pipeline for Prepared {
    fn model(&self) -> &Model {
        &self.model
    }

    fn write_run_files(&self, run_dir: &Path, fresh: bool) -> Result<()> {
        if fresh {
            self.tokenizer.save(run_dir.join(TOKENIZER_FILE))?;
        }
        crate::run::dir::write_json(&run_dir.join(CONFIG_FILE), &self.config)
    }

    fn pretrain<'a>(
        &'a self,
        r: &'a Recipe,
        log_dir: Option<&Path>,
        resume_step: Option<usize>,
    ) -> Result<Option<Box<dyn PretrainStage + 'a>>> {
        let eval_log = log_dir
            .map(|d| MetricsLog::open(&d.join(EVAL_FILE), Some(resume_step.unwrap_or(0))))
            .transpose()?;
        Ok(Some(Box::new(MlmTask {
            objective: &self.objective,
            blocks: self.train.clone(),
            held_out: self.test.as_ref(),
            device: self.model.device.clone(),
            seed: r.seed,
            eval_log: std::sync::Mutex::new(eval_log),
            loader: Default::default(),
        })))
    }

    fn downstream<'a>(
        &'a self,
        r: &'a Recipe,
        file: &Path,
    ) -> Result<Box<dyn DownstreamTask + 'a>> {
        let (train, test, names) = self
            .labelled
            .as_ref()
            .ok_or_else(|| invalid(file, "data.test", "downstream heads need a test split"))?;
        let splits = TextSplits {
            train,
            test,
            label_names: names,
            config: self.config.clone(),
        };
        Ok(Box::new(Task::new(splits, &self.model, r.seed)?))
    }

    fn dry_run(&self, r: &Recipe) -> Result<String> {
        let b = r.train.batch_size.min(self.train.len());
        let idx: Vec<usize> = (0..b).collect();
        let blocks = self.train.gather(&idx)?;
        let batch = self.objective.mask(&blocks, &Draws::fixed(r.seed, b))?;
        let out = self.objective.loss(&blocks, &batch, &mut Mode::Eval)?;
        let loss = out.to_scalar::<f32>()?;
        if !loss.is_finite() {
            return Err(Error::NonFinite { step: 0, loss });
        }
        let target = match &self.objective {
            TextObjective::Mlm(_) => format!(
                "token logits (uniform guess: {:.4})",
                (self.config.vocab_size as f64).ln()
            ),
            TextObjective::Data2vec(_) => "the teacher's targets".to_string(),
        };
        let mut report = format!(
            "recipe `{}` is valid\n  tokenizer: {} tokens\n  train: {} blocks of {} tokens{}\n  model: {}, {} parameters ({} in the encoder)\n  batch: {:?} ids -> {} masked tokens -> {target}\n  initial loss: {loss:.4}\n",
            r.name,
            self.tokenizer.vocab_size(),
            self.train.len(),
            self.train.seq_len,
            self.test
                .as_ref()
                .map_or(String::new(), |t| format!(", test: {} blocks", t.len())),
            self.objective.name(),
            self.model.params.num_params(),
            self.model.params.num_params_with_prefix(self.model.encoder_prefix),
            batch.input_ids.dims(),
            batch.num_predicted(),
        );
        if let Some((train, test, names)) = &self.labelled {
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
}
