"""What the authors configured for each single-target HRDA training row, transcribed.

Reproduction of "Training-Free Model Merging for Multi-target Domain Adaptation"
(Li et al., ECCV 2024).  The values below were read from the authors' public code,
not derived or corrected; tests compare the project's recipes against them.

Sources (public GitHub repositories, read through the stored-code index):

* AIR-DISCOVER/Model-Merging-MTDA (commit 4675c284af05), the authors' fork of HRDA on
  mmsegmentation 0.16:
  - one row file per row under configs/hrda/ (named in each row's ``config_file``);
  - their _base_ chain: configs/_base_/datasets/uda_{gtaHR,synthiaHR}_to_*.py,
    configs/_base_/uda/dacs.py and dacs_a0_fdthings.py,
    configs/_base_/models/daformer_sepaspp_r101.py, daformer_sepaspp_mitb5.py and
    daformer_conv1_mitb5.py;
  - configs/generated/local-basic/*.json, the run pointers written by run_experiments.py;
  - mmseg/datasets/idd.py, mmseg/datasets/builder.py, mmseg/models/uda/uda_decorator.py,
    mmseg/models/segmentors/hrda_encoder_decoder.py, tools/train.py, tools/test.py,
    tools/cs_idd_datahelper.py, test.sh, merge.py, auto-evaluate/generate_cmd.py and
    configs/_base_/datasets/test/dtda_{cityscapes,idd}_test.py.
* lhoyer/HRDA (upstream, commit 09af319dd0f0): configs/_base_/uda/dacs.py and
  dacs_a999_fdthings.py, configs/_base_/datasets/uda_gtaHR_to_cityscapesHR_1024x1024.py and
  uda_synthiaHR_to_cityscapesHR_1024x1024.py, mmseg/models/uda/dacs.py (how alpha, the
  pseudo-label threshold, ClassMix, colour jitter and blur are used),
  mmseg/datasets/uda_dataset.py (rare class sampling, pairing), mmseg/datasets/cityscapes.py,
  acdc.py and dark_zurich.py (pseudo-label margin masks), tools/train.py.
* lhoyer/DAFormer (which HRDA inherits from): configs/_base_/schedules/adamw.py and
  poly10warm.py, mmseg/models/utils/dacs_transforms.py, mmseg/datasets/gta.py, synthia.py.

Things to know when reading the values:

* Several files every row needs (default_runtime.py, schedules/adamw.py,
  schedules/poly10warm.py, uda/dacs_a999_fdthings.py and the two *_to_cityscapesHR_1024x1024
  dataset bases) are not stored for the fork in the index.  The index is deduplicated and
  the upstream HRDA listing lacks schedules/ and default_runtime.py as well, so these are
  most likely unchanged copies; their values are taken from lhoyer/HRDA (or lhoyer/DAFormer),
  and each row's comments say so.
* The "resolved" JSON configs under configs/generated/local-basic/ turned out to hold only
  ``_base_`` (the row file), ``name``, ``work_dir`` and ``git_rev``
  (70e3910330dc699f1704a329617101524bd01857).  They resolve nothing, so every value here is
  the .py chain of the row file.  Only the first 100 of the 221 JSONs could be listed
  (alphabetical, up to 230923_*); all of those are GTA->Cityscapes/IDD/combination runs.
* Sizes: resizes are mmseg ``[W, H]`` img_scale tuples with keep_ratio=True, i.e. the
  image is scaled by min(max(scale)/long side, min(scale)/short side).  Crops are
  ``[H, W]``.  The evaluated weights are the student (UDADecorator.inference and merge.py
  both use ``model.model``); the EMA teacher only makes pseudo-labels.
* ``pseudo_margins`` are [top, bottom, left, right] pixels of a mask built at the target's
  native size before Resize (CityscapesDataset.pre_pipeline); the pseudo-label weight is
  multiplied by it.
* ``n_gpus`` in the row files is metadata: the fork's tools/train.py trains on range(1)
  GPUs unless --gpus is passed, and every name_opt says ``1x2``.
"""

# Fields that every row shares, as the files set them, are still repeated in each row so that
# a row can be compared on its own.  Field-level comments name the file a value was read from;
# "row file", "dataset base", "uda base" and "model base" refer to the files listed at the top
# of each row.

ROWS = {
    'gta2cs_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2csHR_hrda_r101.py
        # dataset base: lhoyer/HRDA configs/_base_/datasets/uda_gtaHR_to_cityscapesHR_1024x1024.py (the fork's copy of this path is not in the index)
        # uda base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs_a0_fdthings.py (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'cityscapes',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1440],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [2048, 1024],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.0,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2csHR_hrda_r101.py',  # row file
        'notes': (
            "name_uda metadata says 'dacs_a999_fdthings_rcs0.01-2.0_cpl2' but the active _base_ "
            'is dacs_a0_fdthings.py (the a999 line is commented out), so alpha=0.0: the DACS '
            'teacher update alpha_teacher=min(1-1/(it+1), 0.0)=0 copies the student every '
            "iteration. Metadata in the file disagrees with the model base: name_encoder='mitb5' "
            "and name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            "name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). The dataset base "
            'is not stored for the fork in the index (the index deduplicates files, and the '
            "fork's unchanged HRDA files such as default_runtime.py and schedules/* are absent "
            "too); values are from lhoyer/HRDA's copy of the same path. A commented '# "
            "crop_size=[640,640]' follows the active test crop. n_gpus=1; checkpoint every 10000 "
            'iters (keep 4); evaluation every 4000. Generated JSONs under '
            'configs/generated/local-basic/ hold only _base_, name, work_dir and git_rev '
            '(70e3910330dc699f1704a329617101524bd01857); they carry no resolved values, so no '
            'value can disagree with the .py chain. Seen: '
            '230912_2132_gtaHR2csHR_hrda_s1_r101_83ff8.json (and 230913_0822, 230914_*) are named '
            "'gtaHR2csHR_hrda_s1_r101' while the file now builds "
            "name='gtaHR2csHR_hrda_r101_seed'+str(seed), so the file was edited after those runs; "
            '230920_1706..230921_0841 JSONs are named gtaHR2csHR_hrda_r101_seed1..seed10 (seed '
            'edited per run; the file says seed=1).'
        ),
    },
    'gta2idd_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2iddHR_hrda_r101.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_gtaHR_to_iddHR_1024x1024.py
        # uda base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs_a0_fdthings.py (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'idd',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1440],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [1920, 1080],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.0,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [1920, 1080],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2iddHR_hrda_r101.py',  # row file
        'notes': (
            "name_uda metadata says 'dacs_a999_fdthings_rcs0.01-2.0_cpl2' but the active _base_ "
            'is dacs_a0_fdthings.py (the a999 line is commented out), so alpha=0.0: the DACS '
            'teacher update alpha_teacher=min(1-1/(it+1), 0.0)=0 copies the student every '
            "iteration. Metadata in the file disagrees with the model base: name_encoder='mitb5' "
            "and name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            "name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). Test crop 512 "
            "with stride 512 (non-overlapping; '# crop_size=[1024, 1024]' commented out) on IDD "
            "at native 1920x1080. Header comment says 'GTA->Cityscapes'. IDDDataset = "
            'CityscapesDataset with suffixes _leftImg8bit.png/_gtFine_labelTrainIds.png and '
            'valid_mask_size [1080,1920] (fork mmseg/datasets/idd.py). n_gpus=1; checkpoint 10000 '
            '(keep 4); evaluation every 4000. Generated JSONs under '
            'configs/generated/local-basic/ hold only _base_, name, work_dir and git_rev '
            '(70e3910330dc699f1704a329617101524bd01857); they carry no resolved values, so no '
            'value can disagree with the .py chain. Seen: '
            "230912_2134_gtaHR2iddHR_hrda_s1_r101_43bda.json named 'gtaHR2iddHR_hrda_s1_r101' "
            "(file now 'gtaHR2iddHR_hrda_r101_seed'+str(seed)); 230920-230923 JSONs "
            'gtaHR2iddHR_hrda_r101_seed1..seed10.'
        ),
    },
    'gta2csidd_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2cs_iddHR_hrda_r101.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_gtaHR_to_cityscapes_iddHR_1024x1024.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'cityscapes+idd',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1440],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [2048, 1024],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2cs_iddHR_hrda_r101.py',  # row file
        'notes': (
            'Data combination = ONE CityscapesDataset over data/cityscapes_idd_combined/ (IDD '
            'images/labels copied in Cityscapes naming by tools/cs_idd_datahelper.py: '
            '*labelcsTrainIds* -> *_labelTrainIds.png, jpg -> png), not two target datasets; a '
            'single target pipeline Resize(2048,1024) applies to every image, so IDD 1920x1080 '
            'frames become 1820x1024 (keep_ratio) while Cityscapes stays 2048x1024. '
            'Validation/test = the combined val split with an extra top-level Resize(2048,1024) '
            'before MultiScaleFlipAug (harmless: ori_shape is kept for rescale). Pseudo-label '
            "margins use the CityscapesDataset mask (1024x2048 in HRDA's cityscapes.py) for IDD "
            'images as well. Unlike gta2cs_r101/gta2idd_r101 this row uses dacs_a999_fdthings.py '
            '(alpha 0.999). ema_alpha 0.999 comes from lhoyer/HRDA '
            "configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that path is not in the "
            'index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). Metadata in the file '
            "disagrees with the model base: name_encoder='mitb5' and "
            "name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            "name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). n_gpus=1; "
            'checkpoint 10000 (keep 4); evaluation every 4000. Generated JSONs under '
            'configs/generated/local-basic/ hold only _base_, name, work_dir and git_rev '
            '(70e3910330dc699f1704a329617101524bd01857); they carry no resolved values, so no '
            'value can disagree with the .py chain. Seen: '
            '230918_1639_gtaHR2cs&iddHR_hrda_s1_r101_ac464.json (and other 230918_* '
            "'gtaHR2cs&iddHR_hrda_s1_r101' runs) point to this file; the file's name is now "
            "'gtaHR2cs_idd_combined_hrda_r101_seed'+str(seed)."
        ),
    },
    'gta2cs_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2csHR_hrda.py
        # dataset base: lhoyer/HRDA configs/_base_/datasets/uda_gtaHR_to_cityscapesHR_1024x1024.py (the fork's copy of this path is not in the index)
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'cityscapes',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1440],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [2048, 1024],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2csHR_hrda.py',  # row file
        'notes': (
            'ema_alpha 0.999 comes from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the '
            "fork's copy of that path is not in the index (only dacs.py, dacs_a0_fdthings.py and "
            'dtda_* are). The dataset base is not stored for the fork in the index (the index '
            "deduplicates files, and the fork's unchanged HRDA files such as default_runtime.py "
            "and schedules/* are absent too); values are from lhoyer/HRDA's copy of the same "
            'path. n_gpus=2 in the file (metadata only: tools/train.py uses range(1) GPUs unless '
            "--gpus is given, and name_opt still says 1x2). name='gtaHR2csHR_hrda_s1' (no seed "
            'suffix, unlike the other rows). Checkpoint every 5000 (keep all, max_keep_ckpts=-1); '
            'evaluation every 20000. Generated JSONs under configs/generated/local-basic/ hold '
            'only _base_, name, work_dir and git_rev (70e3910330dc699f1704a329617101524bd01857); '
            'they carry no resolved values, so no value can disagree with the .py chain. Seen: '
            '230912_1828_gtaHR2csHR_hrda_s1_d4df5.json (and 230912_1607..1826) point to this file '
            'with a matching name.'
        ),
    },
    'gta2idd_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2iddHR_hrda.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_gtaHR_to_iddHR_1024x1024.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'idd',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1440],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [1920, 1080],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [1920, 1080],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2iddHR_hrda.py',  # row file
        'notes': (
            'ema_alpha 0.999 comes from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the '
            "fork's copy of that path is not in the index (only dacs.py, dacs_a0_fdthings.py and "
            "dtda_* are). Test crop 512 / stride 512 ('# crop_size=[1024, 1024]' commented out). "
            "Header comment says 'GTA->Cityscapes'. n_gpus=1; checkpoint 5000 (keep all); "
            "evaluation every 20000. name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU "
            'x 2). No generated JSON for this row was visible (the configs/generated listing is '
            'truncated at 100 of 221 files, alphabetically up to 230923_*). '
        ),
    },
    'gta2csidd_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2cs_iddHR_hrda.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_gtaHR_to_cityscapes_iddHR_1024x1024.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'cityscapes+idd',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1440],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [2048, 1024],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2cs_iddHR_hrda.py',  # row file
        'notes': (
            'Data combination = ONE CityscapesDataset over data/cityscapes_idd_combined/ (IDD '
            'images/labels copied in Cityscapes naming by tools/cs_idd_datahelper.py: '
            '*labelcsTrainIds* -> *_labelTrainIds.png, jpg -> png), not two target datasets; a '
            'single target pipeline Resize(2048,1024) applies to every image, so IDD 1920x1080 '
            'frames become 1820x1024 (keep_ratio) while Cityscapes stays 2048x1024. '
            'Validation/test = the combined val split with an extra top-level Resize(2048,1024) '
            'before MultiScaleFlipAug (harmless: ori_shape is kept for rescale). Pseudo-label '
            "margins use the CityscapesDataset mask (1024x2048 in HRDA's cityscapes.py) for IDD "
            'images as well. ema_alpha 0.999 comes from lhoyer/HRDA '
            "configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that path is not in the "
            'index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). '
            "name='gtaHR2cs_idd_combined_hrda_seed'+str(seed) (a commented "
            "'gtaHR2cs&iddHR_hrda_s1' precedes it). n_gpus=1; checkpoint 5000 (keep all); "
            "evaluation every 20000. name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU "
            'x 2). No generated JSON for this row was visible (the configs/generated listing is '
            'truncated at 100 of 221 files, alphabetically up to 230923_*). '
        ),
    },
    'gta2acdc_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2acdcHR_hrda_r101.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_gtaHR_to_acdcHR_512x512.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'acdc',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [1280, 720],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [960, 540],  # dataset base: target train pipeline Resize img_scale
        'crop': [512, 512],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [960, 540],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2acdcHR_hrda_r101.py',  # row file
        'notes': (
            'The row uses uda_gtaHR_to_acdcHR_512x512.py (the 1024x1024 base is commented out). '
            '512x512 dataset variant: source Resize halves the HR scale, target resized to '
            '(960,540) = half of native 1920x1080, crop 512 = hr_crop_size 512, so the HR detail '
            'crop is the whole training crop and the context branch sees 256x256; test slide crop '
            '512 with stride 512 (no overlap). RCS min_crop_ratio=2.0 is kept although its '
            "comment justifies 2.0 by HRDA's doubled resolution. The target train pipeline has no "
            'LoadAnnotations. GTA 1914x1052 -> 1280x704 under Resize(1280,720). ema_alpha 0.999 '
            "comes from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of "
            'that path is not in the index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). '
            "Metadata in the file disagrees with the model base: name_encoder='mitb5' and "
            "name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            "name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). Header comment "
            "says 'GTA->Cityscapes'. n_gpus=1; checkpoint 5000 (keep 4); evaluation interval "
            '50000: evaluation interval exceeds max_iters 40000, so no evaluation runs during '
            "training. name='gta2acdc_hrda_r101_seed'+str(seed). No generated JSON for this row "
            'was visible (the configs/generated listing is truncated at 100 of 221 files, '
            'alphabetically up to 230923_*). '
        ),
    },
    'gta2dz_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2darkzurichHR_hrda_r101.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_gtaHR_to_darkzurichHR_512x512.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'darkzurich',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [1280, 720],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [960, 540],  # dataset base: target train pipeline Resize img_scale
        'crop': [512, 512],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [960, 540],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2darkzurichHR_hrda_r101.py',  # row file
        'notes': (
            'The row uses uda_gtaHR_to_darkzurichHR_512x512.py (the 1024x1024 base is commented '
            'out). 512x512 dataset variant: source Resize halves the HR scale, target resized to '
            '(960,540) = half of native 1920x1080, crop 512 = hr_crop_size 512, so the HR detail '
            'crop is the whole training crop and the context branch sees 256x256; test slide crop '
            '512 with stride 512 (no overlap). RCS min_crop_ratio=2.0 is kept although its '
            "comment justifies 2.0 by HRDA's doubled resolution. The target train pipeline has no "
            'LoadAnnotations. Dark Zurich train = data/dark_zurich/rgb_anon/train/night/ only; '
            'val/test = rgb_anon/val (night). ema_alpha 0.999 comes from lhoyer/HRDA '
            "configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that path is not in the "
            'index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). Metadata in the file '
            "disagrees with the model base: name_encoder='mitb5' and "
            "name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            'n_gpus=2 in the file (metadata only: tools/train.py uses range(1) GPUs unless --gpus '
            "is given, and name_opt still says 1x2). Header comment says 'Synthia->Cityscapes'. "
            'Checkpoint 5000 (keep 4); evaluation interval 100000: evaluation interval exceeds '
            'max_iters 40000, so no evaluation runs during training. '
            "name='gta2darkzurich_hrda_r101_seed'+str(seed). No generated JSON for this row was "
            'visible (the configs/generated listing is truncated at 100 of 221 files, '
            'alphabetically up to 230923_*). '
        ),
    },
    'gta2acdc_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2acdcHR_hrda.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_gtaHR_to_acdcHR_512x512.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'acdc',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [1280, 720],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [960, 540],  # dataset base: target train pipeline Resize img_scale
        'crop': [512, 512],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [960, 540],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2acdcHR_hrda.py',  # row file
        'notes': (
            'The row uses uda_gtaHR_to_acdcHR_512x512.py (the 1024x1024 base is commented out). '
            '512x512 dataset variant: source Resize halves the HR scale, target resized to '
            '(960,540) = half of native 1920x1080, crop 512 = hr_crop_size 512, so the HR detail '
            'crop is the whole training crop and the context branch sees 256x256; test slide crop '
            '512 with stride 512 (no overlap). RCS min_crop_ratio=2.0 is kept although its '
            "comment justifies 2.0 by HRDA's doubled resolution. The target train pipeline has no "
            'LoadAnnotations. ema_alpha 0.999 comes from lhoyer/HRDA '
            "configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that path is not in the "
            'index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). n_gpus=2 in the file '
            '(metadata only: tools/train.py uses range(1) GPUs unless --gpus is given, and '
            'name_opt still says 1x2). Checkpoint 5000 (keep all); evaluation interval 200000: '
            'evaluation interval exceeds max_iters 40000, so no evaluation runs during training. '
            "name='gta2acdc_hrda_seed'+str(seed). No generated JSON for this row was visible (the "
            'configs/generated listing is truncated at 100 of 221 files, alphabetically up to '
            '230923_*). '
        ),
    },
    'gta2dz_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/gtaHR2darkzurichHR_hrda.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_gtaHR_to_darkzurichHR_1024x1024.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'gta',  # dataset base: train.source
        'target': 'darkzurich',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1440],  # dataset base: gta_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [1920, 1080],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: gta_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [1920, 1080],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/gtaHR2darkzurichHR_hrda.py',  # row file
        'notes': (
            'Unlike gta2dz_r101 (512x512 variant) this row uses the 1024x1024 Dark Zurich base: '
            'DZ at native 1920x1080, crop 1024, test crop 1024 / stride 512. Dark Zurich train = '
            'data/dark_zurich/rgb_anon/train/night/ only; val/test = rgb_anon/val (night). '
            'ema_alpha 0.999 comes from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the '
            "fork's copy of that path is not in the index (only dacs.py, dacs_a0_fdthings.py and "
            "dtda_* are). Header comments say 'Synthia->Cityscapes'. n_gpus=1; checkpoint 10000 "
            "(keep 4); evaluation every 4000. name='gtaHR2darkzurichHR_hrda_seed'+str(seed). "
            "name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). No generated JSON "
            'for this row was visible (the configs/generated listing is truncated at 100 of 221 '
            'files, alphabetically up to 230923_*). '
        ),
    },
    'syn2cs_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2csHR_hrda_r101.py
        # dataset base: lhoyer/HRDA configs/_base_/datasets/uda_synthiaHR_to_cityscapesHR_1024x1024.py (the fork's copy of this path is not in the index)
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'cityscapes',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1520],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [2048, 1024],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2csHR_hrda_r101.py',  # row file
        'notes': (
            'The dataset base is not stored for the fork in the index (the index deduplicates '
            "files, and the fork's unchanged HRDA files such as default_runtime.py and "
            "schedules/* are absent too); values are from lhoyer/HRDA's copy of the same path. "
            'SYNTHIA 1280x760 is upscaled exactly 2x by Resize(2560,1520). ema_alpha 0.999 comes '
            "from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that "
            'path is not in the index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). '
            "Metadata in the file disagrees with the model base: name_encoder='mitb5' and "
            "name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            "name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). n_gpus=1; "
            'checkpoint 10000 (keep 4); evaluation every 4000. '
            "name='synthiaHR2csHR_hrda_r101_seed'+str(seed). SynthiaDataset reuses the 19 "
            'Cityscapes CLASSES and the heads keep num_classes=19; no 16- or 13-class evaluation '
            'setting appears in these configs. No generated JSON for this row was visible (the '
            'configs/generated listing is truncated at 100 of 221 files, alphabetically up to '
            '230923_*). '
        ),
    },
    'syn2cs_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2csHR_hrda.py
        # dataset base: lhoyer/HRDA configs/_base_/datasets/uda_synthiaHR_to_cityscapesHR_1024x1024.py (the fork's copy of this path is not in the index)
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'cityscapes',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1520],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [2048, 1024],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2csHR_hrda.py',  # row file
        'notes': (
            'The dataset base is not stored for the fork in the index (the index deduplicates '
            "files, and the fork's unchanged HRDA files such as default_runtime.py and "
            "schedules/* are absent too); values are from lhoyer/HRDA's copy of the same path. "
            'ema_alpha 0.999 comes from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the '
            "fork's copy of that path is not in the index (only dacs.py, dacs_a0_fdthings.py and "
            "dtda_* are). The file's comment above the model base says 'DAFormer ResNet101 "
            "Network Architecture' but the base is daformer_sepaspp_mitb5.py. n_gpus=1; "
            'checkpoint 10000 (keep 4); evaluation every 4000. '
            "name='synthiaHR2csHR_hrda_seed'+str(seed). name_opt says "
            "'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). No generated JSON for this row "
            'was visible (the configs/generated listing is truncated at 100 of 221 files, '
            'alphabetically up to 230923_*). '
        ),
    },
    'syn2idd_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2iddHR_hrda_r101.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_synthiaHR_to_iddHR_1024x1024.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'idd',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1520],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [1920, 1080],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2iddHR_hrda_r101.py',  # row file
        'notes': (
            'The SYNTHIA->IDD test pipeline uses MultiScaleFlipAug img_scale (2048,1024), unlike '
            'GTA->IDD (1920,1080): IDD val 1920x1080 is evaluated at 1820x1024 (keep_ratio) while '
            "training used native 1920x1080. Test crop 512 / stride 512 ('# crop_size=[1024, "
            "1024]' commented out). ema_alpha 0.999 comes from lhoyer/HRDA "
            "configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that path is not in the "
            'index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). Metadata in the file '
            "disagrees with the model base: name_encoder='mitb5' and "
            "name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            "name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). Header says "
            "'GTA->Cityscapes'. n_gpus=1; checkpoint 10000 (keep 4); evaluation every 4000. "
            "name='synthiaHR2iddHR_hrda_r101_seed'+str(seed). No generated JSON for this row was "
            'visible (the configs/generated listing is truncated at 100 of 221 files, '
            'alphabetically up to 230923_*). '
        ),
    },
    'syn2idd_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2iddHR_hrda.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_synthiaHR_to_iddHR_1024x1024.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'idd',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1520],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [1920, 1080],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2iddHR_hrda.py',  # row file
        'notes': (
            'The SYNTHIA->IDD test pipeline uses img_scale (2048,1024), unlike GTA->IDD '
            '(1920,1080): IDD val is evaluated at 1820x1024. Test crop 512 / stride 512. '
            'ema_alpha 0.999 comes from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the '
            "fork's copy of that path is not in the index (only dacs.py, dacs_a0_fdthings.py and "
            'dtda_* are). n_gpus=1; checkpoint 10000 (keep 4); evaluation every 4000. '
            "name='synthiaHR2iddHR_hrda_seed'+str(seed). name_opt says "
            "'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). No generated JSON for this row "
            'was visible (the configs/generated listing is truncated at 100 of 221 files, '
            'alphabetically up to 230923_*). '
        ),
    },
    'syn2csidd_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2cs_idd_combined_HR_hrda_r101.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_synthiaHR_to_cityscapes_iddHR_1024x1024.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'cityscapes+idd',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1520],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [2048, 1024],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2cs_idd_combined_HR_hrda_r101.py',  # row file
        'notes': (
            'Data combination = ONE CityscapesDataset over data/cityscapes_idd_combined/ (IDD '
            'images/labels copied in Cityscapes naming by tools/cs_idd_datahelper.py: '
            '*labelcsTrainIds* -> *_labelTrainIds.png, jpg -> png), not two target datasets; a '
            'single target pipeline Resize(2048,1024) applies to every image, so IDD 1920x1080 '
            'frames become 1820x1024 (keep_ratio) while Cityscapes stays 2048x1024. '
            'Validation/test = the combined val split with an extra top-level Resize(2048,1024) '
            'before MultiScaleFlipAug (harmless: ori_shape is kept for rescale). Pseudo-label '
            "margins use the CityscapesDataset mask (1024x2048 in HRDA's cityscapes.py) for IDD "
            'images as well. ema_alpha 0.999 comes from lhoyer/HRDA '
            "configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that path is not in the "
            'index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). Metadata in the file '
            "disagrees with the model base: name_encoder='mitb5' and "
            "name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            "name_opt says 'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). n_gpus=1; "
            'checkpoint 5000 (keep all); evaluation interval 200000: evaluation interval exceeds '
            'max_iters 40000, so no evaluation runs during training. '
            "name='synthiaHR2cs_idd_combined_hrda_r101_seed'+str(seed). No generated JSON for "
            'this row was visible (the configs/generated listing is truncated at 100 of 221 '
            'files, alphabetically up to 230923_*). '
        ),
    },
    'syn2csidd_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2cs_idd_combined_HR_hrda.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_synthiaHR_to_cityscapes_iddHR_1024x1024.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'cityscapes+idd',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1520],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [2048, 1024],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [2048, 1024],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2cs_idd_combined_HR_hrda.py',  # row file
        'notes': (
            'Data combination = ONE CityscapesDataset over data/cityscapes_idd_combined/ (IDD '
            'images/labels copied in Cityscapes naming by tools/cs_idd_datahelper.py: '
            '*labelcsTrainIds* -> *_labelTrainIds.png, jpg -> png), not two target datasets; a '
            'single target pipeline Resize(2048,1024) applies to every image, so IDD 1920x1080 '
            'frames become 1820x1024 (keep_ratio) while Cityscapes stays 2048x1024. '
            'Validation/test = the combined val split with an extra top-level Resize(2048,1024) '
            'before MultiScaleFlipAug (harmless: ori_shape is kept for rescale). Pseudo-label '
            "margins use the CityscapesDataset mask (1024x2048 in HRDA's cityscapes.py) for IDD "
            'images as well. ema_alpha 0.999 comes from lhoyer/HRDA '
            "configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that path is not in the "
            'index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). n_gpus=1; checkpoint 5000 '
            '(keep all); evaluation interval 200000: evaluation interval exceeds max_iters 40000, '
            'so no evaluation runs during training. '
            "name='synthiaHR2cs_idd_combined_hrda_seed'+str(seed). name_opt says "
            "'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). No generated JSON for this row "
            'was visible (the configs/generated listing is truncated at 100 of 221 files, '
            'alphabetically up to 230923_*). '
        ),
    },
    'syn2acdc_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2acdcHR_hrda_r101.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_synthiaHR_to_acdcHR_512x512.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'acdc',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [1280, 760],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [960, 540],  # dataset base: target train pipeline Resize img_scale
        'crop': [512, 512],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [960, 540],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2acdcHR_hrda_r101.py',  # row file
        'notes': (
            'The row uses uda_synthiaHR_to_acdcHR_512x512.py (the 1024x1024 base is commented '
            'out); SYNTHIA stays at native 1280x760. 512x512 dataset variant: source Resize '
            'halves the HR scale, target resized to (960,540) = half of native 1920x1080, crop '
            '512 = hr_crop_size 512, so the HR detail crop is the whole training crop and the '
            'context branch sees 256x256; test slide crop 512 with stride 512 (no overlap). RCS '
            "min_crop_ratio=2.0 is kept although its comment justifies 2.0 by HRDA's doubled "
            'resolution. The target train pipeline has no LoadAnnotations. ema_alpha 0.999 comes '
            "from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that "
            'path is not in the index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). '
            "Metadata in the file disagrees with the model base: name_encoder='mitb5' and "
            "name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            'n_gpus=2 in the file (metadata only: tools/train.py uses range(1) GPUs unless --gpus '
            'is given, and name_opt still says 1x2). Checkpoint 5000 (keep 4); evaluation '
            'interval 100000: evaluation interval exceeds max_iters 40000, so no evaluation runs '
            "during training. name='synthia2acdc_hrda_r101_seed'+str(seed). No generated JSON for "
            'this row was visible (the configs/generated listing is truncated at 100 of 221 '
            'files, alphabetically up to 230923_*). '
        ),
    },
    'syn2acdc_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2acdcHR_hrda.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_synthiaHR_to_acdcHR_1024x1024.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'acdc',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [2560, 1520],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [1920, 1080],  # dataset base: target train pipeline Resize img_scale
        'crop': [1024, 1024],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [1024, 1024],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [1920, 1080],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2acdcHR_hrda.py',  # row file
        'notes': (
            'Unlike syn2acdc_r101 (512x512 variant) this row uses the 1024x1024 ACDC base: ACDC '
            'at native 1920x1080, crop 1024, test crop 1024 / stride 512. The comment above the '
            "model base says 'DAFormer ResNet101 Network Architecture' but the base is mitb5. "
            'ema_alpha 0.999 comes from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the '
            "fork's copy of that path is not in the index (only dacs.py, dacs_a0_fdthings.py and "
            'dtda_* are). n_gpus=1; checkpoint 10000 (keep 4); evaluation every 4000. '
            "name='synthiaHR2acdcHR_hrda_seed'+str(seed). name_opt says "
            "'adamw_6e-05_pmTrue_poly10warm_1x2_40k' (1 GPU x 2). No generated JSON for this row "
            'was visible (the configs/generated listing is truncated at 100 of 221 files, '
            'alphabetically up to 230923_*). '
        ),
    },
    'syn2dz_r101': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2darkzurichHR_hrda_r101.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_synthiaHR_to_darkzurichHR_512x512.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_r101.py (ResNetV1c depth 101, pretrained/resnet101_v1c-e67eebb6.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'darkzurich',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'resnet101_v1c',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [1280, 760],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [960, 540],  # dataset base: target train pipeline Resize img_scale
        'crop': [512, 512],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [960, 540],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2darkzurichHR_hrda_r101.py',  # row file
        'notes': (
            'The row uses uda_synthiaHR_to_darkzurichHR_512x512.py (the 1024x1024 base is '
            'commented out). 512x512 dataset variant: source Resize halves the HR scale, target '
            'resized to (960,540) = half of native 1920x1080, crop 512 = hr_crop_size 512, so the '
            'HR detail crop is the whole training crop and the context branch sees 256x256; test '
            'slide crop 512 with stride 512 (no overlap). RCS min_crop_ratio=2.0 is kept although '
            "its comment justifies 2.0 by HRDA's doubled resolution. The target train pipeline "
            'has no LoadAnnotations. Dark Zurich train = data/dark_zurich/rgb_anon/train/night/ '
            'only; val/test = rgb_anon/val (night). ema_alpha 0.999 comes from lhoyer/HRDA '
            "configs/_base_/uda/dacs_a999_fdthings.py; the fork's copy of that path is not in the "
            'index (only dacs.py, dacs_a0_fdthings.py and dtda_* are). Metadata in the file '
            "disagrees with the model base: name_encoder='mitb5' and "
            "name_architecture='hrda1-512-0.1_daformer_sepaspp_sl_mitb5' although _base_ is "
            'daformer_sepaspp_r101.py (ResNetV1c-101, pretrained/resnet101_v1c-e67eebb6.pth). '
            'n_gpus=2 in the file (metadata only: tools/train.py uses range(1) GPUs unless --gpus '
            'is given, and name_opt still says 1x2). Checkpoint 5000 (keep 4); evaluation '
            'interval 100000: evaluation interval exceeds max_iters 40000, so no evaluation runs '
            "during training. name='synthia2darkzurich_hrda_r101_seed'+str(seed). No generated "
            'JSON for this row was visible (the configs/generated listing is truncated at 100 of '
            '221 files, alphabetically up to 230923_*). '
        ),
    },
    'syn2dz_mitb5': {
        # row file: AIR-DISCOVER/Model-Merging-MTDA configs/hrda/synthiaHR2darkzurichHR_hrda.py
        # dataset base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/datasets/uda_synthiaHR_to_darkzurichHR_512x512.py
        # uda base: configs/_base_/uda/dacs_a999_fdthings.py as named by the row; the fork's copy is not in the index, values from lhoyer/HRDA (_base_ dacs.py)
        # model base: AIR-DISCOVER/Model-Merging-MTDA configs/_base_/models/daformer_sepaspp_mitb5.py -> daformer_conv1_mitb5.py (mit_b5, pretrained/mit_b5.pth)
        'source': 'synthia',  # dataset base: train.source
        'target': 'darkzurich',  # dataset base: train.target, val, test
        'method': 'hrda',  # row file: HRDAEncoderDecoder + HRDAHead
        'backbone': 'mit_b5',  # model base
        'decode_head': 'daformer_sepaspp',  # model base: DAFormerHead, fusion aspp sep=True, dilations (1, 6, 12, 18); row wraps it in HRDAHead
        'source_resize': [1280, 760],  # dataset base: synthia_train_pipeline Resize img_scale (keep_ratio default True)
        'target_resize': [960, 540],  # dataset base: target train pipeline Resize img_scale
        'crop': [512, 512],  # dataset base: crop_size (RandomCrop and Pad)
        'hr_crop': [512, 512],  # row file: hr_crop_size
        'scales': [1, 0.5],  # row file (HRDAEncoderDecoder sorts it to [0.5, 1])
        'hr_loss_weight': 0.1,  # row file: decode_head.hr_loss_weight
        'feature_scale': 0.5,  # row file
        'ema_alpha': 0.999,  # uda base: alpha
        'pseudo_threshold': 0.968,  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py
        'pseudo_margins': [30, 240, 30, 30],  # row file: data.train.target.crop_pseudo_margins
        'rcs_min_pixels': 3000,  # row file: rare_class_sampling.min_pixels
        'rcs_temperature': 0.01,  # row file: rare_class_sampling.class_temp
        'rcs_min_crop_ratio': 2.0,  # row file: rare_class_sampling.min_crop_ratio
        'cat_max_ratio': 0.75,  # dataset base: synthia_train_pipeline RandomCrop
        'fd_lambda': 0.005,  # uda base: imnet_feature_dist_lambda
        'fd_classes': [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],  # uda base: imnet_feature_dist_classes
        'fd_scale_min_ratio': 0.75,  # uda base: imnet_feature_dist_scale_min_ratio
        'lr': 6e-05,  # row file: optimizer.lr (schedules/adamw.py has the same)
        'weight_decay': 0.01,  # lhoyer/DAFormer configs/_base_/schedules/adamw.py (AdamW, betas (0.9, 0.999)); row: decay_mult 0.0 for pos_block and norm
        'head_lr_mult': 10.0,  # row file: paramwise_cfg.custom_keys.head.lr_mult
        'max_iters': 40000,  # row file: runner IterBasedRunner
        'warmup_iters': 1500,  # lhoyer/DAFormer configs/_base_/schedules/poly10warm.py (warmup='linear')
        'warmup_ratio': 1e-06,  # poly10warm.py
        'poly_power': 1.0,  # poly10warm.py (policy='poly', by_epoch=False)
        'min_lr': 0.0,  # poly10warm.py
        'batch_source': 2,  # dataset base: data.samples_per_gpu
        'batch_target': 2,  # same samples_per_gpu: each UDADataset item is one (source, target) pair; RCS draws the source via a rare class, the target uniformly
        'test_mode': 'slide',  # row file: test_cfg.mode (batched_slide=True)
        'test_crop': [512, 512],  # row file: test_cfg.crop_size
        'test_stride': [512, 512],  # row file: test_cfg.stride
        'test_resize': [960, 540],  # dataset base: test_pipeline MultiScaleFlipAug img_scale; val and test are the same split
        'seed': 1,  # row file (deterministic=True)
        'mix': 'class',  # AIR-DISCOVER/Model-Merging-MTDA configs/_base_/uda/dacs.py: mix='class' (ClassMix)
        'color_jitter': {'strength': 0.2, 'probability': 0.2},  # dacs.py; dacs_transforms.color_jitter jitters when a uniform draw > p, i.e. in 80% of batches
        'blur': True,  # dacs.py; Gaussian blur when a uniform draw > 0.5
        'config_file': 'configs/hrda/synthiaHR2darkzurichHR_hrda.py',  # row file
        'notes': (
            'The row uses the 512x512 Dark Zurich base (1024x1024 commented out), unlike '
            'gta2dz_mitb5 which uses 1024x1024. 512x512 dataset variant: source Resize halves the '
            'HR scale, target resized to (960,540) = half of native 1920x1080, crop 512 = '
            'hr_crop_size 512, so the HR detail crop is the whole training crop and the context '
            'branch sees 256x256; test slide crop 512 with stride 512 (no overlap). RCS '
            "min_crop_ratio=2.0 is kept although its comment justifies 2.0 by HRDA's doubled "
            'resolution. The target train pipeline has no LoadAnnotations. Dark Zurich train = '
            'data/dark_zurich/rgb_anon/train/night/ only; val/test = rgb_anon/val (night). '
            'ema_alpha 0.999 comes from lhoyer/HRDA configs/_base_/uda/dacs_a999_fdthings.py; the '
            "fork's copy of that path is not in the index (only dacs.py, dacs_a0_fdthings.py and "
            'dtda_* are). n_gpus=2 in the file (metadata only: tools/train.py uses range(1) GPUs '
            'unless --gpus is given, and name_opt still says 1x2). Checkpoint 5000 (keep 4); '
            'evaluation interval 100000: evaluation interval exceeds max_iters 40000, so no '
            "evaluation runs during training. name='synthia2darkzurich_hrda_seed'+str(seed). No "
            'generated JSON for this row was visible (the configs/generated listing is truncated '
            'at 100 of 221 files, alphabetically up to 230923_*). '
        ),
    },
}


# Test protocol per target dataset as the authors' dataset configs set it (val split; the
# configs use the same split for ``val`` and ``test``).  ``test_resize`` is [W, H] from the
# dataset base's MultiScaleFlipAug (flip=False, no img_ratios); ``test_crop`` and
# ``test_stride`` ([H, W], mode 'slide', batched) are not in the dataset files but in the row
# files' model.test_cfg, so they are given for the rows that use each dataset variant.
# ``merged_eval`` names the backbones for which auto-evaluate/generate_cmd.py evaluates merged
# checkpoints with that variant (it always uses the GTA row files: cs, idd, acdc, darkzurich).
TEST_PROTOCOL = {
    "cityscapes": {
        "split": "val",
        "data_root": "data/cityscapes/",  # img_dir leftImg8bit/val, ann_dir gtFine/val
        "dataset_type": "CityscapesDataset",
        "test_resize": [2048, 1024],  # uda_gtaHR_to_cityscapesHR_1024x1024.py and the SYNTHIA twin (lhoyer/HRDA copies)
        "test_crop": [1024, 1024],
        "test_stride": [512, 512],
        "mode": "slide",
        "rows": ["gta2cs_r101", "gta2cs_mitb5", "syn2cs_r101", "syn2cs_mitb5"],
        "merged_eval": ["resnet101_v1c", "mit_b5"],  # gtaHR2csHR_hrda_r101.py / gtaHR2csHR_hrda.py
    },
    "idd": {
        "split": "val",
        "data_root": "data/idd/",  # img_dir leftImg8bit/val, ann_dir gtFine/val
        "dataset_type": "IDDDataset",
        "test_resize": [1920, 1080],  # uda_gtaHR_to_iddHR_1024x1024.py: native size, no rescale
        "test_crop": [512, 512],  # gtaHR2iddHR_hrda{,_r101}.py ('# crop_size=[1024, 1024]' commented out)
        "test_stride": [512, 512],
        "mode": "slide",
        "rows": ["gta2idd_r101", "gta2idd_mitb5"],
        "merged_eval": ["resnet101_v1c", "mit_b5"],  # gtaHR2iddHR_hrda_r101.py / gtaHR2iddHR_hrda.py
    },
    "idd_synthia": {
        # The SYNTHIA->IDD dataset base evaluates IDD at a different scale than GTA->IDD:
        # img_scale (2048, 1024) turns 1920x1080 frames into 1820x1024.
        "split": "val",
        "data_root": "data/idd/",
        "dataset_type": "IDDDataset",
        "test_resize": [2048, 1024],  # uda_synthiaHR_to_iddHR_1024x1024.py
        "test_crop": [512, 512],  # synthiaHR2iddHR_hrda{,_r101}.py
        "test_stride": [512, 512],
        "mode": "slide",
        "rows": ["syn2idd_r101", "syn2idd_mitb5"],
        "merged_eval": [],
    },
    "acdc": {
        # 1024x1024-crop variant.
        "split": "val",
        "data_root": "data/acdc/",  # img_dir rgb_anon/val, ann_dir gt/val (all four conditions, flattened)
        "dataset_type": "ACDCDataset",
        "test_resize": [1920, 1080],  # uda_{gta,synthia}HR_to_acdcHR_1024x1024.py ("original 1920x1080")
        "test_crop": [1024, 1024],  # synthiaHR2acdcHR_hrda.py
        "test_stride": [512, 512],
        "mode": "slide",
        "rows": ["syn2acdc_mitb5"],
        "merged_eval": [],
    },
    "acdc_512": {
        # 512x512-crop variant: half resolution.
        "split": "val",
        "data_root": "data/acdc/",
        "dataset_type": "ACDCDataset",
        "test_resize": [960, 540],  # uda_{gta,synthia}HR_to_acdcHR_512x512.py
        "test_crop": [512, 512],  # gtaHR2acdcHR_hrda{,_r101}.py, synthiaHR2acdcHR_hrda_r101.py
        "test_stride": [512, 512],
        "mode": "slide",
        "rows": ["gta2acdc_r101", "gta2acdc_mitb5", "syn2acdc_r101"],
        "merged_eval": ["resnet101_v1c", "mit_b5"],  # gtaHR2acdcHR_hrda_r101.py / gtaHR2acdcHR_hrda.py
    },
    "darkzurich": {
        # 1024x1024-crop variant.
        "split": "val",
        "data_root": "data/dark_zurich/",  # img_dir rgb_anon/val, ann_dir gt/val
        "dataset_type": "DarkZurichDataset",
        "test_resize": [1920, 1080],  # uda_{gta,synthia}HR_to_darkzurichHR_1024x1024.py
        "test_crop": [1024, 1024],  # gtaHR2darkzurichHR_hrda.py
        "test_stride": [512, 512],
        "mode": "slide",
        "rows": ["gta2dz_mitb5"],
        "merged_eval": ["mit_b5"],  # gtaHR2darkzurichHR_hrda.py
    },
    "darkzurich_512": {
        # 512x512-crop variant: half resolution.
        "split": "val",
        "data_root": "data/dark_zurich/",
        "dataset_type": "DarkZurichDataset",
        "test_resize": [960, 540],  # uda_{gta,synthia}HR_to_darkzurichHR_512x512.py
        "test_crop": [512, 512],  # gtaHR2darkzurichHR_hrda_r101.py, synthiaHR2darkzurichHR_hrda{,_r101}.py
        "test_stride": [512, 512],
        "mode": "slide",
        "rows": ["gta2dz_r101", "syn2dz_r101", "syn2dz_mitb5"],
        "merged_eval": ["resnet101_v1c"],  # gtaHR2darkzurichHR_hrda_r101.py
    },
    "cityscapes+idd": {
        # The data-combination rows validate on the combined val split (Cityscapes val + IDD
        # val in one CityscapesDataset); the test pipeline has an extra top-level
        # Resize(img_scale=(2048, 1024)) before MultiScaleFlipAug.
        "split": "val",
        "data_root": "data/cityscapes_idd_combined/",
        "dataset_type": "CityscapesDataset",
        "test_resize": [2048, 1024],  # uda_{gta,synthia}HR_to_cityscapes_iddHR_1024x1024.py
        "test_crop": [1024, 1024],
        "test_stride": [512, 512],
        "mode": "slide",
        "rows": ["gta2csidd_r101", "gta2csidd_mitb5", "syn2csidd_r101", "syn2csidd_mitb5"],
        "merged_eval": [],
    },
    "idd_dtda_test": {
        # Not a training row: the fork's DTDA test base configs/_base_/datasets/test/dtda_idd_test.py
        # evaluates IDD val as a CityscapesDataset at (2048, 1024) with the extra top-level Resize;
        # crop/stride from configs/dtda/test/gtaHR2csHR_and_iddHR_dtda_test_idd.py.
        "split": "val",
        "data_root": "data/idd/",
        "dataset_type": "CityscapesDataset",
        "test_resize": [2048, 1024],
        "test_crop": [1024, 1024],
        "test_stride": [512, 512],
        "mode": "slide",
        "rows": [],
        "merged_eval": [],
    },
}


# Native image sizes [W, H] the configs or dataset code assume, with where that shows.
DATASET_NATIVE_SIZES = {
    "gta": {
        "size": [1914, 1052],
        "source": (
            "not stated in any config or dataset code read; the GTA Resize (2560, 1440) and "
            "(1280, 720) are consistent with it (1914x1052 -> 2560x1407 / 1280x704 under "
            "keep_ratio). mmseg/datasets/gta.py sets no size."
        ),
    },
    "cityscapes": {
        "size": [2048, 1024],
        "source": (
            "lhoyer/HRDA mmseg/datasets/cityscapes.py builds the pseudo-margin mask as "
            "np.ones([1024, 2048]); train and test img_scale (2048, 1024) leave it unscaled."
        ),
    },
    "idd": {
        "size": [1920, 1080],
        "other_sizes": None,
        "source": (
            "AIR-DISCOVER/Model-Merging-MTDA mmseg/datasets/idd.py: valid_mask_size = [1080, 1920]; "
            "uda_gtaHR_to_iddHR_1024x1024.py train/test img_scale (1920, 1080). No other IDD size "
            "appears in the configs or code; whether IDD holds frames of other sizes (the IDD "
            "paper mentions some 720p images) was not determined from these sources."
        ),
    },
    "acdc": {
        "size": [1920, 1080],
        "source": (
            "uda_gtaHR_to_acdcHR_{512x512,1024x1024}.py comments '# original 1920x1080'; "
            "lhoyer/HRDA mmseg/datasets/acdc.py: valid_mask_size = [1080, 1920]."
        ),
    },
    "darkzurich": {
        "size": [1920, 1080],
        "source": (
            "lhoyer/HRDA mmseg/datasets/dark_zurich.py: valid_mask_size = [1080, 1920]; "
            "uda_*_to_darkzurichHR_1024x1024.py img_scale (1920, 1080)."
        ),
    },
    "synthia": {
        "size": [1280, 760],
        "source": (
            "not stated in code (mmseg/datasets/synthia.py sets no size); the 512x512 variants "
            "use Resize (1280, 760) as the identity and the HR bases (2560, 1520), exactly 2x."
        ),
    },
}
