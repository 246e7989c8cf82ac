"""The one error type of weights I/O: a message a user can act on, naming the file and the problem."""


class WeightsError(ValueError):
    pass
