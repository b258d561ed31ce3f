//! Command-line parsing into typed commands, and their execution.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::apply::{self, EmbedInputs};
use crate::backbone::Pooling;
use crate::error::{Error, Result};
use crate::recipe::{self, Override};
use crate::run::{self, dir, RunOptions};

#[derive(Parser, Debug)]
#[command(
    name = "pretext",
    version,
    about = "Self-supervised masked pretraining on Candle"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a recipe (pretraining, then downstream heads), or resume a run directory.
    Run {
        /// A recipe file, or a run directory to resume from its latest checkpoint.
        target: PathBuf,
        /// Override a recipe key: `--set train.steps=2000` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove a recipe key so its default applies (repeatable).
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
        /// Parent directory of new runs.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Exact directory for a new run (must not exist).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stop after this many steps, as if interrupted (resume later with `pretext run RUN_DIR`).
        #[arg(long, hide = true)]
        stop_after: Option<usize>,
        /// Resume although the run's recipe changed this key since its checkpoints were
        /// written (repeatable; a section, e.g. `objective`, allows every key in it).
        #[arg(long = "allow-changed", value_name = "KEY")]
        allow_changed: Vec<String>,
        /// Start a run directory whose checkpoints are gone over from step 0, rewriting its
        /// metrics log.
        #[arg(long)]
        restart: bool,
    },
    /// Validate or print recipes.
    Recipe {
        #[command(subcommand)]
        command: RecipeCommand,
    },
    /// List the tensors of a safetensors file, a checkpoint or a run.
    Inspect { path: PathBuf },
    /// Write a model in another format (`--format hf`: Hugging Face transformers).
    ///
    /// `--format hf` writes config.json, model.safetensors and preprocessor_config.json in
    /// the layout `save_pretrained` writes, which `from_pretrained` loads: an MAE run as
    /// ViTMAEForPreTraining, a saved classifier as ViTForImageClassification. Text models
    /// (BERT, RoBERTa) are written as config.json, model.safetensors and, when the source has
    /// one, tokenizer.json. Audio models (wav2vec2, HuBERT, data2vec-audio) are written as
    /// Wav2Vec2Model, HubertModel or Data2VecAudioModel (config.json, model.safetensors,
    /// preprocessor_config.json); a …ForCTC / …ForPreTraining source is written as its base
    /// model. Waveform classifiers (one a run fine-tuned, or a run without pretraining: its
    /// best one) are written as …ForSequenceClassification.
    Export {
        /// A run directory, a checkpoint inside a run, a saved classifier directory, a
        /// Hugging Face directory, or hf:org/name[@rev] (the local Hugging Face cache, downloaded
        /// there when missing).
        src: String,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Output directory (created if needed).
        #[arg(long)]
        out: PathBuf,
        /// Device to run on: auto (a GPU when this binary was built with `cuda` or `metal`
        /// and one is present, else the CPU), cpu, cuda, cuda:N or metal.
        #[arg(long, default_value = "auto", value_parser = parse_device)]
        device: crate::device::DeviceSpec,
    },
    /// Run a model on a safetensors file of inputs named as in transformers.
    ///
    /// Image models: pixel_values, optional noise and labels (other tensors are ignored);
    /// writes last_hidden_state and, where the model has them, pooler_output, logits, loss,
    /// mask (f32), ids_restore (i64). An MAE given no noise draws it with seed 0 and writes it
    /// as `noise`.
    ///
    /// Text models (BERT, RoBERTa): input_ids, optional attention_mask, token_type_ids and
    /// labels (-100 = ignore; int64 or uint32); writes last_hidden_state, pooler_output (if
    /// the model has a pooler), logits and loss (MLM models; loss when labels are given).
    ///
    /// Audio models (wav2vec2, HuBERT, data2vec-audio): input_values [B, S] (float) and
    /// optional attention_mask [B, S] (any dtype, nonzero = real sample); writes
    /// last_hidden_state and extract_features (…ForSequenceClassification: logits, and loss
    /// given labels [B]).
    ///
    /// Text and audio classifiers a run fine-tuned (RUN/downstream/NAME): input_ids [B, T]
    /// (optional attention_mask: its zeros become padding) or input_values [B, S] (each row
    /// fitted to the model's window, as predict does), optional labels [B]; writes logits
    /// and loss.
    Forward {
        /// Any model source (see `export`).
        #[arg(long)]
        model: String,
        /// Safetensors file with the inputs.
        #[arg(long)]
        inputs: PathBuf,
        /// Safetensors file for the outputs.
        #[arg(long)]
        out: PathBuf,
        /// Device to run on: auto (a GPU when this binary was built with `cuda` or `metal`
        /// and one is present, else the CPU), cpu, cuda, cuda:N or metal.
        #[arg(long, default_value = "auto", value_parser = parse_device)]
        device: crate::device::DeviceSpec,
    },
    /// Pooled embeddings of image files (one per image), sentences (one per sentence) or WAV
    /// files (one per file).
    ///
    /// Audio: each WAV is mixed down and resampled to the model's rate (wav2vec2 / HuBERT /
    /// data2vec-audio: 16 kHz, normalised per window when the model's
    /// preprocessor_config.json says do_normalize, as the feature extractor does; Audio-MAE
    /// encoders: the run's log-mel settings). A file longer than the model's window (Audio-MAE:
    /// its clip length; waveform models: 20 s) is cut into consecutive windows, each embedded,
    /// and the file's embedding is their mean; the output states `seconds` and `windows`.
    ///
    /// Text models tokenize with the model's tokenizer.json (truncating to the model's
    /// positions, or to sentence_bert_config.json's max_seq_length where there is one, with
    /// a warning), pad per batch, and by default mean-pool over the attention
    /// mask and L2-normalise, as sentence-transformers does.
    Embed {
        /// Any model source (see `export`).
        #[arg(long)]
        model: String,
        #[command(flatten)]
        inputs: InputArgs,
        /// FILE.safetensors (`embeddings` [N, D], file names or sentences in the metadata key
        /// `images` / `texts`) or FILE.jsonl (`{"image"|"text": ..., "embedding": [...]}` per
        /// line); default: JSON lines on standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The first (class) token's final hidden state, or the mean of the hidden states
        /// (images and Audio-MAE: of the patch tokens; text: over the attention mask;
        /// wav2vec2-like audio models: of the frames, and they have no class token). Default:
        /// cls for images, mean for text and audio.
        #[arg(long, value_enum)]
        pooling: Option<PoolingArg>,
        /// Device to run on: auto (a GPU when this binary was built with `cuda` or `metal`
        /// and one is present, else the CPU), cpu, cuda, cuda:N or metal.
        #[arg(long, default_value = "auto", value_parser = parse_device)]
        device: crate::device::DeviceSpec,
        /// Text: leave the embeddings unnormalised (default: L2-normalised).
        #[arg(long)]
        no_normalize: bool,
    },
    /// Label images, sentences or WAV files with a classifier: one JSON line per input,
    /// `{"input", "label", "score", "top_k": [{"label", "score"}...]}`.
    ///
    /// MODEL is a run (its fine-tuned classifier with the best test accuracy), a classifier
    /// a run saved (RUN/downstream/NAME: image, text, spectrogram or waveform), or a Hugging
    /// Face ViTForImageClassification, BertForSequenceClassification or
    /// RobertaForSequenceClassification (a directory or hf:org/name). Class names come from
    /// the run's data (folder names, JSONL labels, `data.classes` for IDX files) or the
    /// config's id2label. Inputs are prepared as fine-tuning prepared its test split; audio
    /// longer than the model's window is cut into full-length windows whose probabilities
    /// are averaged (the output states `seconds` and `windows`).
    Predict {
        /// A classifier (see above).
        #[arg(long)]
        model: String,
        #[command(flatten)]
        inputs: InputArgs,
        /// How many classes to list per input, most probable first.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// FILE.jsonl, or FILE.csv (input,label,score,label_2,score_2,...); default: JSON
        /// lines on standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Inputs (audio: windows) per forward pass.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Device to run on: auto (a GPU when this binary was built with `cuda` or `metal`
        /// and one is present, else the CPU), cpu, cuda, cuda:N or metal.
        #[arg(long, default_value = "auto", value_parser = parse_device)]
        device: crate::device::DeviceSpec,
    },
    /// Compare runs: their training losses overlaid in one picture, and their
    /// label-efficiency tables as one table with a column per run.
    Report {
        /// Run directories.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where to draw the loss curves.
        #[arg(long, default_value = "report.png")]
        out: PathBuf,
    },
    /// Score a classifier on labelled data: accuracy, precision / recall / F1 per class and
    /// the confusion matrix.
    ///
    /// MODEL is any classifier `predict` takes. DATA is what its modality reads: an image
    /// folder (root/<class>/*.png|jpg), a JSONL file (`text` and `label` fields), or audio as
    /// a folder (root/<label>/*.wav) or a CSV manifest (`path`, `label`). Labels are matched
    /// to the classifier's classes by name; inputs are prepared as by `predict`.
    Eval {
        /// A classifier (see `predict`).
        #[arg(long)]
        model: String,
        /// Labelled data (see above): a folder, JSONL file or CSV manifest, or a recipe file
        /// or run directory (its labelled test split, IDX included). Default: the run the
        /// classifier was fine-tuned in.
        #[arg(long)]
        data: Option<PathBuf>,
        /// The split of a recipe or run to evaluate on.
        #[arg(long, value_enum, default_value = "test")]
        split: crate::apply::eval_data::EvalSplit,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also draw the confusion matrix as a PNG (rows: true class, columns: predicted,
        /// white to dark blue for none to all of the row's examples).
        #[arg(long, value_name = "FILE.png")]
        confusion: Option<PathBuf>,
        /// Inputs (audio: windows) per forward pass.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Device to run on: auto (a GPU when this binary was built with `cuda` or `metal`
        /// and one is present, else the CPU), cpu, cuda, cuda:N or metal.
        #[arg(long, default_value = "auto", value_parser = parse_device)]
        device: crate::device::DeviceSpec,
    },
}

/// The inputs `embed` and `predict` take: one kind, images, sentences or WAV files.
#[derive(clap::Args, Debug)]
pub struct InputArgs {
    /// Image files (PNG, JPEG); image models only.
    #[arg(long = "image", value_name = "PATH", num_args = 1..)]
    images: Vec<PathBuf>,
    /// A sentence (repeatable); text models only.
    #[arg(long = "text", value_name = "SENTENCE")]
    texts: Vec<String>,
    /// A file of sentences, one per line (blank lines skipped); text models only.
    #[arg(long, value_name = "FILE")]
    text_file: Option<PathBuf>,
    /// WAV files (8/16/24/32-bit integer or 32-bit float, any rate and channel count: mixed
    /// down and resampled); audio models only.
    #[arg(long = "audio", value_name = "WAV", num_args = 1..)]
    audio: Vec<PathBuf>,
}

impl InputArgs {
    fn read(self, verb: &str) -> crate::error::Result<EmbedInputs> {
        EmbedInputs::from_args(
            verb,
            self.images,
            self.texts,
            self.text_file.as_deref(),
            self.audio,
        )
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Hugging Face `transformers` (save_pretrained layout).
    Hf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolingArg {
    Cls,
    Mean,
}

#[derive(Subcommand, Debug)]
pub enum RecipeCommand {
    /// Check keys, values, data files and shapes (a dry run of one batch).
    Check {
        file: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Print a recipe.
    Show {
        file: PathBuf,
        /// Print it as it will run: presets, overrides and defaults applied.
        #[arg(long)]
        resolved: bool,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
}

fn overrides(set: &[String], unset: &[String]) -> Result<Vec<Override>> {
    let mut out = set
        .iter()
        .map(|s| Override::parse_set(s))
        .collect::<Result<Vec<_>>>()?;
    out.extend(unset.iter().map(|k| Override::Unset(k.clone())));
    Ok(out)
}

pub fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            target,
            set,
            unset,
            runs_dir,
            out,
            stop_after,
            allow_changed,
            restart,
        } => {
            let o = overrides(&set, &unset)?;
            // Under `mpirun`: joins the job, one rank per process.
            let world = crate::dist::init()?;
            let opts = RunOptions {
                runs_root: Some(runs_dir),
                out,
                stop_after,
                skip_downstream: false,
                driver: None,
                allow_changed,
                restart,
            };
            let summary = if target.is_dir() {
                if !dir::is_run_dir(&target) {
                    return Err(Error::Usage(format!(
                        "{} is a directory without {}: give a recipe file or a run directory",
                        target.display(),
                        dir::RECIPE_FILE
                    )));
                }
                run::resume(&target, &o, &opts)?
            } else {
                run::start(&recipe::load(&target, &o)?, &opts)?
            };
            if world.rank() == 0 {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Recipe {
            command: RecipeCommand::Check { file, set, unset },
        } => {
            let loaded = recipe::load(&file, &overrides(&set, &unset)?)?;
            print!("{}", run::dry_run(&loaded)?);
            Ok(())
        }
        Command::Recipe {
            command:
                RecipeCommand::Show {
                    file,
                    resolved,
                    set,
                    unset,
                },
        } => {
            if resolved || !set.is_empty() || !unset.is_empty() {
                let loaded = recipe::load(&file, &overrides(&set, &unset)?)?;
                print!("{}", recipe::to_toml(&loaded.recipe));
            } else {
                print!("{}", crate::input::read_to_string(&file)?);
            }
            Ok(())
        }
        Command::Inspect { path } => {
            print!("{}", crate::inspect::report(&path)?);
            Ok(())
        }
        Command::Export {
            src,
            format,
            out,
            device,
        } => {
            let ExportFormat::Hf = format;
            let e = apply::export(&src, &out, &crate::device::open(device)?)?;
            println!(
                "wrote {} ({}) to {}",
                file_names(&e.files),
                e.class,
                out.display()
            );
            if let Some(note) = e.note {
                eprintln!("note: {note}");
            }
            Ok(())
        }
        Command::Forward {
            model,
            inputs,
            out,
            device,
        } => apply::forward(&model, &inputs, &out, &crate::device::open(device)?),
        Command::Embed {
            model,
            inputs,
            out,
            pooling,
            no_normalize,
            device,
        } => {
            let inputs = inputs.read("embed")?;
            let dev = crate::device::open(device)?;
            let pooling = pooling.map(|p| match p {
                PoolingArg::Cls => Pooling::Cls,
                PoolingArg::Mean => Pooling::Mean,
            });
            let out = out.as_deref();
            match inputs {
                EmbedInputs::Images(i) => apply::embed_images(&model, &i, out, pooling, &dev),
                EmbedInputs::Texts(t) => {
                    apply::embed_text(&model, &t, out, pooling, !no_normalize, &dev)
                }
                EmbedInputs::Audio(a) => apply::embed_audio(&model, &a, out, pooling, &dev),
            }
        }
        Command::Predict {
            model,
            inputs,
            top_k,
            out,
            batch_size,
            device,
        } => {
            let inputs = inputs.read("predict")?;
            let dev = crate::device::open(device)?;
            let opts = apply::predict::PredictOptions {
                top_k,
                out: out.as_deref(),
                batch_size,
            };
            apply::predict::predict(&model, inputs, &opts, &dev)
        }
        Command::Report { runs, out } => {
            print!("{}", crate::run::compare::compare(&runs, &out)?);
            eprintln!("loss curves: {}", out.display());
            Ok(())
        }
        Command::Eval {
            model,
            data,
            split,
            out,
            confusion,
            batch_size,
            device,
        } => {
            let dev = crate::device::open(device)?;
            let e = apply::eval::eval(&model, data.as_deref(), split, batch_size, &dev)?;
            print!("{}", e.table());
            if let Some(path) = &out {
                let json = serde_json::to_string_pretty(&e)
                    .map_err(|err| crate::error::Error::data(path, err.to_string()))?;
                crate::tensor_io::write_atomic(path, json.as_bytes())?;
            }
            if let Some(path) = &confusion {
                apply::eval::confusion_png(&e, path)?;
            }
            Ok(())
        }
    }
}

/// Parses `--device` as a recipe's `device` is parsed.
fn parse_device(s: &str) -> std::result::Result<crate::device::DeviceSpec, String> {
    crate::device::parse(s)
}

fn file_names(files: &[PathBuf]) -> String {
    files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(", ")
}
