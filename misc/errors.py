"""The one error type the pipeline raises for bad input: a message a user can act on."""


class PipelineError(RuntimeError):
    """Bad input or missing prerequisite; the message names the file and the fix."""
