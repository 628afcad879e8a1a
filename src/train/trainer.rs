//! The training loop.
//!
//! Determinism: the epoch's shuffle is drawn from `Rng(seed, epoch)` and the
//! augmentation from `Rng(seed, step)` (Fashion-MNIST) or `Rng(seed, epoch, sample)`
//! (image folders), so a run's every random draw is a function of its seed and step
//! counter. Batches are built ahead by a loader thread (`data::prefetch`), in step order. A checkpoint therefore needs only those two numbers to make a
//! resumed run bit-identical to an uninterrupted one.
//!
//! Safety: a run stops, naming the step and the learning rate, when its loss diverges
//! (`divergence.rs`) or a step leaves a non-finite value in the state, and it never
//! saves such a state, so the checkpoints it keeps are ones it can continue from.

use super::checkpoint::Progress;
use super::divergence::{non_finite_op, Divergence, LossWatch, GROWTH, WINDOW};
use super::evaluate::Evaluator;
use super::generations::{self, newest_path, rejected_path};
use super::init::{init_state, read_weights, start_from, CLASSIFIER};
use super::launch::{share, share_state, ProcessGroup};
use super::lookahead::{stage_batches, Lookahead};
use super::metrics::{truncate_metrics, Window};
use super::replicas::{Feed, StepRunner};
use super::run_dir::RunDir;
use super::schedule::Schedule;
use super::{OptionNames, SgdState, TrainOptions};
use crate::data::digest::{self, chain};
use crate::data::prefetch::{Plan, Prefetched, Prefetcher};
use crate::data::{rng::Rng, source};
use anyhow::{anyhow, bail, Context, Result};
use calib_ir::{DType, GraphBuilder, Mode};
use calib_models::{build_with, ModelSpec};
use calib_passes::{data_parallel_step, train_step, DataParallel, Sgd, TrainConfig};
use calib_runtime::{weights, write_atomic, Backend};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// What one epoch's evaluation found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochResult {
    pub epoch: u64,
    pub step: u64,
    pub test_loss: f64,
    pub test_accuracy: f64,
}

/// How [`train`] treats the run directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run; a directory already holding one is refused.
    Fresh,
    /// A new run replacing the one the directory holds.
    Overwrite,
    /// The directory's run, continued from its newest good checkpoint.
    Resume,
}

/// Runs (`Start::Resume`: continues) the training run in `out`; stops after
/// `max_steps` optimizer steps in all when given. Returns the evaluations made in this
/// invocation: none when a resumed run had already reached its end (it is left as it
/// was). Holds `out`'s lock throughout; a start that fails leaves no directory it made.
pub fn train(
    opts: &TrainOptions,
    backend: &(dyn Backend + Sync),
    out: &Path,
    start: Start,
    max_steps: Option<u64>,
) -> Result<Vec<EpochResult>> {
    train_as(opts, backend, out, start, max_steps, None)
}

/// [`train`] as this process's replica of `group` (a launcher's group of processes,
/// `opts.replicas` of them): every rank takes its shard of every batch, rank 0 alone
/// holds and writes `out` (the others need no run directory: rank 0 sends them where
/// to start), and every rank returns once rank 0 has written the final model.
pub fn train_in_group(
    opts: &TrainOptions,
    backend: &(dyn Backend + Sync),
    out: &Path,
    start: Start,
    max_steps: Option<u64>,
    group: &ProcessGroup,
) -> Result<Vec<EpochResult>> {
    train_as(opts, backend, out, start, max_steps, Some(group))
}

fn train_as(
    opts: &TrainOptions,
    backend: &(dyn Backend + Sync),
    out: &Path,
    start: Start,
    max_steps: Option<u64>,
    group: Option<&ProcessGroup>,
) -> Result<Vec<EpochResult>> {
    match group {
        // The replicas are processes, each with its own devices.
        Some(g) => {
            opts.validate_as(OptionNames::Flags)?;
            if opts.replicas != g.world() {
                bail!(
                    "the run has {} replica(s) but the launcher started WORLD_SIZE={}                      processes (a resumed run keeps its number of replicas)",
                    opts.replicas,
                    g.world()
                );
            }
        }
        None => opts.validate_for(backend, OptionNames::Flags)?,
    }
    if max_steps == Some(0) {
        bail!("--max-steps 0: must be at least 1");
    }
    let resume = start == Start::Resume;
    if group.is_some_and(|g| !g.is_primary()) {
        return train_in(None, out, opts, backend, resume, max_steps, group);
    }
    let run = match start {
        Start::Resume => RunDir::open(out)?,
        Start::Fresh | Start::Overwrite => RunDir::create(out, start == Start::Overwrite)?,
    };
    match train_in(
        Some(&run),
        run.path(),
        opts,
        backend,
        resume,
        max_steps,
        group,
    ) {
        Ok(results) => Ok(results),
        Err(e) => {
            run.abandon();
            Err(e)
        }
    }
}

/// The run; `run` is the held run directory `out`, absent on ranks other than 0 of a
/// group, which write nothing.
#[allow(clippy::too_many_arguments)]
fn train_in(
    run: Option<&RunDir>,
    out: &Path,
    opts: &TrainOptions,
    backend: &(dyn Backend + Sync),
    resume: bool,
    max_steps: Option<u64>,
    group: Option<&ProcessGroup>,
) -> Result<Vec<EpochResult>> {
    let primary = run.is_some();
    let splits = source::open(
        &opts.data,
        opts.data_dir.as_deref(),
        opts.train_limit,
        opts.test_limit,
    )?;
    let (train_set, test_set) = (splits.train, splits.test);
    let [channels, height, width] = train_set.image_shape();
    check_model_fits(opts, channels, train_set.classes())?;
    if train_set.len() < opts.batch {
        bail!(
            "batch {} is larger than the {} training images",
            opts.batch,
            train_set.len()
        );
    }
    let steps_per_epoch = (train_set.len() / opts.batch) as u64;
    let total = opts.epochs * steps_per_epoch;
    let end = max_steps.map_or(total, |m| m.min(total));

    let resumed = if resume && primary {
        let found = generations::newest_good(out)?;
        let ck = &found.checkpoint;
        if ck.progress.seed != opts.seed {
            bail!(
                "{} was trained with seed {}, not {}",
                generations::generation_path(out, found.generation).display(),
                ck.progress.seed,
                opts.seed
            );
        }
        // Before anything is written: a finished run is left exactly as it was.
        if ck.progress.step >= end {
            let why = match max_steps {
                Some(m) if m < total => format!("--max-steps {m} asks for no more"),
                _ => format!("that is the end of its {} epochs", opts.epochs),
            };
            eprintln!(
                "{} is already at step {}, and {why}: nothing to do",
                out.display(),
                ck.progress.step
            );
            if let Some(g) = group {
                share::<Option<u64>>(g.host(), Some(&None), "last step")?;
            }
            return Ok(vec![]);
        }
        for r in &found.rejected {
            eprintln!(
                "passing over {}; it is kept as {}",
                r.why,
                rejected_path(&r.path).display()
            );
        }
        generations::promote(out, &found)?;
        Some(found.checkpoint)
    } else {
        None
    };
    // In a group, every rank stops where rank 0 does (its --max-steps, its checkpoint).
    let end = match group {
        Some(g) => {
            let mine = Some(end);
            match share::<Option<u64>>(g.host(), primary.then_some(&mine), "last step")? {
                Some(end) => end,
                None => {
                    eprintln!("rank 0's run is already at its end: nothing to do");
                    return Ok(vec![]);
                }
            }
        }
        None => end,
    };
    let stale = match run {
        Some(run) => run.remove_stale_temporaries()?,
        None => 0,
    };
    if stale > 0 {
        eprintln!(
            "removed {stale} temporary file(s) left in {} by interrupted writes",
            out.display()
        );
    }

    let shard = vec![opts.batch / opts.replicas, channels, height, width];
    let mut builder = GraphBuilder::new(Mode::Train, DType::F32);
    if opts.sync_bn {
        builder = builder.with_sync_bn(opts.replicas);
    }
    let forward = build_with(&opts.spec, &shard, builder)?;
    let config = TrainConfig {
        sgd: Sgd {
            momentum: opts.momentum,
            weight_decay: opts.weight_decay,
            nesterov: opts.nesterov,
        },
        label_smoothing: opts.label_smoothing,
    };
    let step_graph = if opts.replicas == 1 && !opts.sync_bn {
        train_step(&forward.graph, &config)?
    } else {
        let dp = DataParallel {
            replicas: opts.replicas,
            bucket_bytes: (opts.bucket_mb * (1 << 20) as f64) as usize,
        };
        data_parallel_step(&forward.graph, &config, &dp)?.step
    };
    // After autodiff, so the backward GEMMs round as the forward ones do.
    let step_graph = calib_passes::precision::apply_step(&step_graph, opts.precision)?;
    let mut runner = StepRunner::new(backend, &step_graph, shard, opts.replicas, group)?;
    // The model's order, in which the first non-finite tensor is reported.
    let state_order: Vec<String> = forward.state.iter().map(|e| e.name.clone()).collect();

    let rank0 = match resumed {
        _ if !primary => None,
        Some(ck) => {
            let expected: Vec<_> = forward
                .state
                .iter()
                .map(|e| (e.name.clone(), e.ty.clone()))
                .collect();
            calib_runtime::check_state(&expected, &ck.sgd.state)
                .context("checkpoint does not fit the model")?;
            truncate_metrics(out, ck.progress.step)?;
            eprintln!("resuming {} from step {}", out.display(), ck.progress.step);
            Some((ck.sgd, ck.progress.step))
        }
        None => {
            let mut rng = Rng::new(opts.seed);
            let mut state = init_state(&forward.state, &mut rng);
            if let Some(path) = &opts.init_weights {
                let fresh: &[&str] = if opts.new_classifier {
                    &CLASSIFIER
                } else {
                    &[]
                };
                state = start_from(&forward.state, state, read_weights(path)?, fresh)
                    .with_context(|| {
                        format!("--weights {} against model {}", path.display(), opts.model)
                    })?;
            }
            let sgd = SgdState::new(&step_graph, state);
            let config = out.join("config.json");
            write_atomic(&config, serde_json::to_string_pretty(opts)?.as_bytes())
                .with_context(|| format!("writing {}", config.display()))?;
            let _ = std::fs::remove_file(out.join("metrics.jsonl"));
            Some((sgd, 0))
        }
    };
    // Every rank starts from rank 0's bits.
    let (mut sgd, start) = match group {
        Some(g) => share_state(
            g.host(),
            rank0.as_ref().map(|(sgd, step)| (sgd, *step)),
            opts.seed,
        )?,
        None => rank0.expect("a run outside a group is its own rank 0"),
    };

    runner.load(&sgd)?;
    // Whether `sgd` holds what the sessions hold (they keep the state between steps).
    let mut in_sync = true;
    // The step of the newest checkpoint on disk, for the messages of a stopped run.
    let mut saved = resume.then_some(start);

    let schedule = Schedule {
        kind: opts.schedule,
        peak: opts.lr,
        warmup_steps: (opts.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total_steps: total,
        steps_per_epoch,
        step_epochs: opts.step_epochs,
        gamma: opts.gamma,
    };
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = match primary {
        true => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&metrics_path)
                .with_context(|| format!("opening {}", metrics_path.display()))?,
        ),
        false => None,
    };
    let mut evaluator = Evaluator::new(&opts.spec, test_set.as_ref(), opts.eval_batch)
        .with_precision(opts.precision);
    let mut results = vec![];
    let mut step = start;
    let plan = Plan {
        seed: opts.seed,
        batch: opts.batch,
        steps_per_epoch,
        start,
        end,
        augment: opts.augment,
        replicas: opts.replicas,
        // In a group of processes each loader makes only its rank's shard.
        rank: group.map(|g| g.rank()),
    };
    let loader = Prefetcher::start(train_set.clone(), plan, PREFETCH_DEPTH)?;
    let mut batches = Lookahead::new(loader, stage_batches());
    let mut shown_epoch = None;
    let bar = match primary {
        true => ProgressBar::new(0),
        false => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut window = Window::default();
    let mut losses = LossWatch::default();
    while step < end {
        let epoch = step / steps_per_epoch;
        let pos = (step % steps_per_epoch) as usize;
        if shown_epoch != Some(epoch) {
            shown_epoch = Some(epoch);
            bar.set_length(steps_per_epoch);
            bar.set_prefix(format!("{}/{}", epoch + 1, opts.epochs));
        }
        bar.set_position(pos as u64);
        // With staging, the next step's batch too: the sessions get it with this step,
        // so a GPU copies it while this step computes.
        let (taken, next) = batches.take(step, end)?;
        window.data_seconds += taken.waited;
        let lr = schedule.lr(step);
        let this = feed(&taken.batch, lr);
        let next = next.map(|n| feed(&n.batch, schedule.lr(step + 1)));
        // Steps are counted from 1 in messages, as in metrics.jsonl and checkpoints.
        let at = || format!("step {} (learning rate {})", step + 1, show_rate(lr));
        // A run that diverged stops here, naming the step, the rate and what went wrong.
        let diverged = |what: String| {
            bar.finish_and_clear();
            anyhow!(
                "training diverged at {}: {what}; lower --lr. {}",
                at(),
                rollback_note(out, saved)
            )
        };
        let t0 = Instant::now();
        let outcome = match runner.run(this, next) {
            Ok(outcome) => outcome,
            // --check-finite: the interpreter names the first op that made a NaN or inf.
            Err(e) => match non_finite_op(&e) {
                Some(op) => return Err(diverged(op.to_string())),
                None => return Err(e.context(at())),
            },
        };
        window.add(opts.batch, t0.elapsed().as_secs_f64());
        window.digest = Some(chain(window.digest, outcome.digest));
        in_sync = false;
        let loss = outcome.loss;
        if let Some(divergence) = losses.observe(loss) {
            return Err(diverged(match divergence {
                Divergence::NotFinite => format!("the loss became {loss}"),
                Divergence::Grew { best } => format!(
                    "the loss, {loss:.3e}, is over {GROWTH:.0} times the best {WINDOW}-step \
                     mean loss so far ({best:.4})"
                ),
            }));
        }
        window.correct += outcome.correct;
        window.loss += loss * opts.batch as f64;
        step += 1;
        bar.set_message(format!(
            "loss {:.3} acc {:.1}% {:.0} img/s",
            window.loss / window.images as f64,
            100.0 * window.correct as f64 / window.images as f64,
            window.images_per_second()
        ));
        // A run stopped by --max-steps mid-epoch logs and evaluates where it stops; those
        // lines are marked, and a resumed run drops them so its log reads as one run.
        let interrupted = step == end && step % steps_per_epoch != 0;
        if step % opts.log_every.max(1) == 0 || step == end {
            let mut line = serde_json::json!({
                "epoch": epoch + 1, "step": step, "loss": window.loss / window.images as f64,
                "train_accuracy": window.correct as f64 / window.images as f64,
                "lr": lr, "images_per_second": window.images_per_second(),
                "data_wait_seconds": window.data_seconds,
                "skipped_images": outcome.skipped + test_set.skipped(),
                "batch_digest": window.digest.map(digest::show),
            });
            let copies = runner.copy_times();
            if let Some(figures) = window.copy_figures(copies) {
                for (k, v) in figures.as_object().expect("an object") {
                    line[k] = v.clone();
                }
            }
            if interrupted {
                line["interrupted"] = true.into();
            }
            if let Some(metrics) = metrics.as_mut() {
                writeln!(metrics, "{line}")?;
            }
            window = Window {
                copies_before: copies,
                ..Window::default()
            };
        }
        let epoch_done = step % steps_per_epoch == 0;
        let checkpoint_due = epoch_done
            || step == end
            || (opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0);
        // Evaluations and checkpoints read the state back; steps in between do not.
        if checkpoint_due && !in_sync {
            runner.read(&mut sgd)?;
            in_sync = true;
            // Nothing is evaluated or saved from a state that a NaN or an infinity got into.
            if let Some((name, census)) = sgd.first_non_finite(&state_order) {
                bar.finish_and_clear();
                bail!(
                    "training diverged at step {step} (learning rate {}): the update left \
                     `{name}` non-finite, and its checkpoint was not saved: {census}; lower \
                     --lr. {}",
                    show_rate(lr),
                    rollback_note(out, saved)
                );
            }
        }
        // Rank 0 evaluates; the others go on to the next step and wait for it there.
        if primary && (epoch_done || step == end) {
            bar.set_position(steps_per_epoch.min(step - epoch * steps_per_epoch));
            bar.suspend(|| -> Result<()> {
                let (test_loss, test_accuracy) = evaluator.run(backend, &sgd.state)?;
                let r = EpochResult { epoch: epoch + 1, step, test_loss, test_accuracy };
                let mut line = serde_json::json!({"epoch": r.epoch, "step": r.step, "loss": test_loss, "test_loss": test_loss, "test_accuracy": test_accuracy});
                if interrupted {
                    line["interrupted"] = true.into();
                }
                if let Some(metrics) = metrics.as_mut() {
                    writeln!(metrics, "{line}")?;
                }
                eprintln!("epoch {} step {}: test loss {:.4}, test accuracy {:.2}%", r.epoch, r.step, test_loss, 100.0 * test_accuracy);
                results.push(r);
                Ok(())
            })?;
        }
        if checkpoint_due {
            if let Some(metrics) = metrics.as_mut() {
                metrics.flush()?;
                let progress = Progress {
                    step,
                    seed: opts.seed,
                };
                generations::save(out, &sgd, progress, opts.keep_checkpoints)?;
            }
            saved = Some(step);
        }
    }
    bar.finish_and_clear();
    if !in_sync {
        runner.read(&mut sgd)?;
    }
    if primary {
        weights::save(out.join("model.safetensors"), &sgd.state)?;
    }
    // No rank reports success before rank 0 has written the model.
    if let Some(g) = group {
        g.host()
            .barrier()
            .context("waiting for rank 0 to write the final model")?;
    }
    Ok(results)
}

/// Where a stopped run can be taken up again: `saved` is the step of the newest
/// checkpoint on disk.
fn rollback_note(out: &Path, saved: Option<u64>) -> String {
    match saved {
        Some(step) => format!(
            "--resume {} continues from its newest checkpoint, of step {step}; to go \
             further back, rename an older checkpoint.N.safetensors over {} first",
            out.display(),
            newest_path(out).display()
        ),
        None => format!(
            "No checkpoint was saved: start again with --out {} --overwrite",
            out.display()
        ),
    }
}

/// A learning rate as the step computes with it (in f32), readable at any magnitude.
fn show_rate(lr: f64) -> String {
    let lr = lr as f32;
    if (1e-4..1e5).contains(&lr.abs()) {
        format!("{lr}")
    } else {
        format!("{lr:e}")
    }
}

/// What a step is fed of a batch from the loader, at learning rate `lr`.
fn feed(b: &Prefetched, lr: f64) -> Feed<'_> {
    Feed {
        pixels: &b.batch.pixels,
        labels: &b.batch.labels,
        lr,
        digest: b.digest,
        skipped: b.skipped,
    }
}

/// Batches the loader may build ahead of the step.
const PREFETCH_DEPTH: usize = 3;

/// The model must take the data set's images and name its classes.
fn check_model_fits(opts: &TrainOptions, channels: usize, classes: usize) -> Result<()> {
    if opts.spec.in_channels() != channels {
        bail!(
            "{} expects {} input channels; the images of the data set have {channels}",
            opts.model,
            opts.spec.in_channels()
        );
    }
    let declared = match &opts.spec {
        ModelSpec::ScNet(s) => Some(s.num_classes),
        ModelSpec::ResNet(s) => Some(s.num_classes),
        ModelSpec::ScConv(_) | ModelSpec::ScBottleneck(_) => None,
    };
    if let Some(k) = declared {
        if k != classes {
            bail!("{} has {k} classes; the data set has {classes}", opts.model);
        }
    }
    Ok(())
}
