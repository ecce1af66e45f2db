## Run by `make images` inside the built workspace image: R and its Jupyter kernel load, a model
## fits, no package repository is configured by default, and the home folder is the user's.
suppressPackageStartupMessages(library(IRkernel))
stopifnot(length(getOption("repos")) == 0)
fit <- glm(am ~ wt, data = mtcars, family = binomial)
stopifnot(inherits(fit, "glm"), fit$df.residual >= 10)
spec <- jsonlite::fromJSON("/opt/kluis/venv/share/jupyter/kernels/ir/kernel.json")
stopifnot(spec$language == "R")
stopifnot(file.access(path.expand("~"), 2) == 0)
cat("workspace: R ", R.version$major, ".", R.version$minor, " IRkernel ",
    as.character(packageVersion("IRkernel")), ", no repository configured: ok\n", sep = "")
