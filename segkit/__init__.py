"""segkit: the library under train.py, evaluate.py, predict.py and export.py.

Scripts parse flags, make one call here and print the result; tests, notebooks and benchmarks call
the same functions. Imports run one way: scripts -> segkit -> data/models/losses/metrics -> errors.

    trainer       train(config) / resume(run_dir): a run folder from a TrainConfig
    config        TrainConfig, the flags that mirror it, validation
    splits        the training and validation data of a run (Splits)
    loop_keras    the Keras fit loop;  loop_tf: the raw-TensorFlow loop of unet_tf
    schedule      learning-rate schedules
    run_folder    what a run folder holds, resuming, locking, the per-epoch RunRecorder
    runtime       precision, tf.distribute strategy, worker roles, library versions
    loading       load_model: any saved model (run folder, .keras, SavedModel, .tflite), checked first
    tflite_runtime  running .tflite files (interpreter and kernels)
    inference     Predictor: logits and labels for images of any size, test-time augmentation
    scoring       evaluate_model: confusion-matrix metrics over a split, tables, pictures
    predicting    predict images, folders and videos into mask and overlay files
    export/       SavedModel, TFLite and .keras exports checked against their source
    visualize     colour masks, overlays, curves, confusion matrices
    fileio        atomic writes, readable-JSON and writable-path checks
    memory        will it fit: memory estimates for training and inference, checked before the work
    cli           the scripts' entry point and shared flags
"""
