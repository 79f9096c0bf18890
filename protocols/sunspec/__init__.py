"""SunSpec over Modbus: register types and point codecs (``points``) and the models, one module each
(``models``)."""
