//! The data loader's options, shared by `calib train` and `calib bench`.

/// How image folder data sets are read.
#[derive(clap::Args, Debug)]
pub struct LoaderArgs {
    /// With --data imagefolder:DIR: the side of the square images the model takes
    /// (training crops are resized to it; validation resizes the shorter side to
    /// SIZE*256/224 and crops the centre). Default 224, as ImageNet models use.
    #[arg(long, allow_negative_numbers = true)]
    pub image_size: Option<u32>,
    /// With --data imagefolder:DIR: threads decoding and augmenting images (0: one per
    /// core). Batches are the same whatever the number.
    #[arg(long, allow_negative_numbers = true)]
    pub loader_workers: Option<usize>,
}
